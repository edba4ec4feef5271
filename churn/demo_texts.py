"""Template bank for the free-text column of the demo ``interactions`` table.

Texts are composed from templates x slot fillers so the demo data holds a few thousand distinct, realistic
English tickets and reviews plus a few hundred Chinese ones. They are grouped in buckets by
(language, category, tone) so the generator can pick a text whose sentiment tracks the customer's latent
satisfaction. Tones: 0 angry, 1 annoyed, 2 neutral, 3 positive.
"""

from __future__ import annotations

import itertools
import re
import string
from functools import lru_cache

import numpy as np

LANGUAGES: tuple[str, ...] = ("en", "zh")
CATEGORIES: tuple[str, ...] = ("billing", "technical", "cancellation", "product_feedback", "praise", "account")
N_TONES = 4
ANGRY, ANNOYED, NEUTRAL, POSITIVE = range(N_TONES)

# Most combinations of one template's fillers kept, so no single template dominates a bucket.
_MAX_PER_TEMPLATE = 40
_SENTENCE_START = re.compile(r"(^|[.!?]\s+)([a-z])")

_FILL_EN: dict[str, tuple[str, ...]] = {
    "amount": ("$9.99", "$15.99", "$24.99", "$4.99", "$19.98", "$31.98", "$12.49"),
    "plan": ("Basic", "Standard", "Premium"),
    "duration": ("two days", "three days", "a week", "two weeks", "a month", "over a month"),
    "product": ("the app", "the iOS app", "the Android app", "the website", "the desktop app", "the TV app",
                "the tablet app"),
    "feature": ("offline downloads", "search", "recommendations", "playlist sync", "notifications", "export",
                "family sharing", "watchlist", "dark mode", "sleep timer", "profile switching", "subtitles"),
    "error": ("keeps crashing", "won't load", "logs me out", "freezes", "shows a blank screen",
              "is extremely slow"),
    "when": ("every evening", "after the latest update", "on my phone", "on Wi-Fi", "every time I open it",
             "at random"),
    "competitor": ("a competitor", "another service", "a cheaper alternative", "a rival app"),
    "agent": ("Sam", "Priya", "Alex", "Maria", "Jordan", "your support team", "the chat agent"),
    "content": ("playlists", "downloads", "watch history", "favourites"),
}

_FILL_ZH: dict[str, tuple[str, ...]] = {
    "amount": ("9.99元", "15.99元", "24.99元", "30元", "19.98元"),
    "plan": ("基础", "标准", "高级"),
    "duration": ("两天", "一个星期", "半个月", "一个多月"),
    "product": ("手机App", "网页版", "电视端", "电脑客户端", "平板App"),
    "feature": ("离线下载", "搜索功能", "推荐功能", "消息通知", "同步功能", "家庭共享", "字幕"),
    "error": ("一直闪退", "打不开", "特别卡", "老是白屏"),
    "agent": ("小王", "小李", "小张"),
}

# (category, tone) -> templates. A missing pair (e.g. angry praise) is never drawn by the generator.
_EN: dict[tuple[str, int], tuple[str, ...]] = {
    ("billing", POSITIVE): (
        "Thanks for refunding the {amount} so quickly, really appreciate it.",
        "The billing team sorted out my {plan} invoice in minutes. Great service!",
        "Quick thanks: the discount on my {plan} plan was applied right away.",
        "Appreciate the clear receipt for {amount}, it makes expensing easy.",
        "{agent} fixed the double charge of {amount} straight away. Thank you!",
    ),
    ("billing", NEUTRAL): (
        "Can you send me an invoice for the {amount} charge from last month?",
        "How do I update the credit card used for my {plan} subscription?",
        "What is the price difference between {plan} and the other plans?",
        "I'd like to switch to annual billing. Is there a discount on the {plan} plan?",
        "When exactly is my next payment of {amount} taken?",
        "Is tax included in the {amount} I was charged?",
        "Could you confirm my {plan} plan renews at {amount}?",
    ),
    ("billing", ANNOYED): (
        "I was charged {amount} but expected a lower price on the {plan} plan. Please explain.",
        "My promo code didn't apply and I paid the full {amount}. Can you fix this?",
        "The price went up to {amount} without much notice. Not great.",
        "There is a charge of {amount} I don't recognise. I asked {duration} ago, please check it.",
        "Billing support took {duration} to answer a simple question about my {plan} invoice.",
        "Why am I still paying {amount} when the {plan} plan was advertised cheaper?",
    ),
    ("billing", ANGRY): (
        "You charged me {amount} TWICE this month. I want a refund immediately.",
        "This is the third time I've been overcharged. {amount} for a service that barely works is a joke.",
        "I cancelled my add-on {duration} ago and you still took {amount}. Unacceptable.",
        "Nobody has answered my refund request for {duration}. Stop taking my money.",
        "Hidden fees again! {amount} on my card with no explanation. Absolutely ridiculous.",
        "Refund the {amount} now or I'm disputing it with my bank.",
    ),
    ("technical", POSITIVE): (
        "The {feature} issue is fixed after the update, thank you!",
        "Support walked me through the problem with {product} in five minutes. Everything works now.",
        "Thanks for the quick fix, the {feature} feature works perfectly on {product} again.",
        "{agent} solved my {feature} problem on the first try. Impressive.",
    ),
    ("technical", NEUTRAL): (
        "How do I turn on {feature} in {product}?",
        "Is the {feature} feature available on {product}? I couldn't find the setting.",
        "Does {product} work on older devices? Asking before I upgrade.",
        "Quick question: where did the {feature} option go in {product} after the last update?",
        "Is there a known issue with {feature} today?",
    ),
    ("technical", ANNOYED): (
        "{product} {error} {when}. Please look into it.",
        "The {feature} feature has been flaky for {duration}. It works, but only sometimes.",
        "Still seeing the same bug with {feature} on {product}. A bit frustrating.",
        "{product} {error} {when}, I have to restart it constantly.",
        "Reported a problem with {feature} {duration} ago and haven't heard back.",
    ),
    ("technical", ANGRY): (
        "{product} {error} {when} and support keeps sending me the same useless article.",
        "{duration} of the {feature} feature not working. I'm paying for this and it's broken!",
        "Worst update ever. {product} {error} and the {feature} feature is completely gone.",
        "I have reported this bug three times in {duration}. Nobody cares. Fix {feature} or I'm done.",
        "{product} {error} {when}. Absolutely useless, I want my money back.",
    ),
    ("cancellation", NEUTRAL): (
        "How do I pause my {plan} subscription for a couple of months?",
        "If I cancel now, do I keep access until the end of the billing period?",
        "What happens to my {content} if I close my account?",
        "Can I downgrade from {plan} instead of cancelling?",
        "Is there a way to keep my {content} after cancelling the {plan} plan?",
    ),
    ("cancellation", ANNOYED): (
        "Thinking about cancelling, the {plan} plan is getting expensive for what I use.",
        "I barely use {feature} any more. Not sure it's worth paying {amount}.",
        "Honestly {competitor} offers more for less. Give me a reason to stay.",
        "Not sure the {plan} plan is worth {amount} a month anymore.",
        "If the {feature} bug isn't fixed soon I'll probably switch to {competitor}.",
    ),
    ("cancellation", ANGRY): (
        "Cancel my {plan} subscription. I'm done with this service.",
        "I'm moving to {competitor}. Close my account and stop charging me.",
        "I want to cancel TODAY and get my {amount} back. Do not try to keep me.",
        "After {duration} of problems I'm cancelling. Worst customer experience I've had.",
        "Stop the auto-renewal now. I'm switching to {competitor}.",
        "Why is it so hard to cancel? I've tried for {duration}. Cancel it now.",
    ),
    ("product_feedback", POSITIVE): (
        "Love the new {feature} feature, it's exactly what I needed.",
        "The {feature} feature on {product} is fantastic. Keep it up!",
        "Great job on the redesign, {product} feels much faster.",
        "The recommendations have become really good lately, found lots of new stuff for my {content}.",
        "The {feature} feature is the reason I upgraded to {plan}. Brilliant.",
    ),
    ("product_feedback", NEUTRAL): (
        "Would be nice to have {feature} on {product} as well.",
        "Suggestion: let us customise {feature}.",
        "Any plans to bring {feature} to {product}?",
        "It's fine overall, but the {feature} setting could be easier to find.",
        "Feature request: sort {content} by date in {product}.",
    ),
    ("product_feedback", ANNOYED): (
        "The new layout of {product} is confusing, I can't find {feature}.",
        "Why did you remove {feature}? I used it every day.",
        "{product} feels slower since the redesign.",
        "Too many promos in {product} lately, it's getting annoying.",
        "The {feature} feature got worse after the update, please revert it.",
    ),
    ("product_feedback", ANGRY): (
        "The redesign ruined {product}. The {feature} feature is impossible to use now.",
        "You keep removing features people pay for. Bring back {feature}!",
        "Terrible update. {product} is unusable and nobody listens to feedback.",
        "Paying {amount} a month for a product that gets worse every update. Shameful.",
    ),
    ("praise", POSITIVE): (
        "Best subscription I pay for. The {feature} feature alone is worth it.",
        "Excellent service, {agent} was super helpful.",
        "Five stars. {product} just works.",
        "Been a customer for years and never had a problem with {product}. Thank you!",
        "Fantastic support from {agent}, solved everything in one chat.",
        "Great value for {amount}, my whole family uses {product}.",
    ),
    ("praise", NEUTRAL): (
        "It's good. Does what I need.",
        "Pretty decent service overall, the {feature} feature is handy.",
        "Solid app, no complaints so far with {product}.",
        "Works fine for the price, the {feature} feature is useful.",
    ),
    ("account", POSITIVE): (
        "Thanks for helping me recover my account so quickly.",
        "Changing my email address was painless, nice work.",
        "{agent} fixed my login problem right away. Great support.",
        "Adding my partner to the {plan} plan took a minute. Thanks!",
    ),
    ("account", NEUTRAL): (
        "How do I change the email address on my account?",
        "Can I add a family member to my {plan} plan?",
        "I need to reset my password but the email hasn't arrived yet.",
        "How do I enable two-factor authentication in {product}?",
        "Can I transfer my {content} to a new account?",
    ),
    ("account", ANNOYED): (
        "I keep getting logged out of {product} and have to reset my password every week.",
        "The password reset email took {duration} to arrive.",
        "Why do I need to verify my account again on {product}? Annoying.",
        "My {content} disappeared after I changed my email. Please restore it.",
    ),
    ("account", ANGRY): (
        "Someone accessed my account and you did NOTHING for {duration}. Unacceptable.",
        "Locked out of my account for {duration}. Fix it now!",
        "Your verification process is a nightmare, I can't even log in to cancel.",
        "You deleted my {content} and nobody can tell me why. Furious.",
    ),
}

_ZH: dict[tuple[str, int], tuple[str, ...]] = {
    ("billing", POSITIVE): ("退款{amount}很快就到账了，谢谢！", "账单问题处理得很及时，非常满意。",
                            "客服帮我把{plan}套餐的优惠补上了，服务很好。"),
    ("billing", NEUTRAL): ("请问怎么修改绑定的银行卡？", "能帮我开一张{amount}的发票吗？",
                           "{plan}套餐和其他套餐差多少钱？", "下次扣款是什么时候？"),
    ("billing", ANNOYED): ("这个月扣了{amount}，比之前贵了，能解释一下吗？", "优惠码没有生效，多付了{amount}。",
                           "账单上有一笔{amount}的费用看不懂。"),
    ("billing", ANGRY): ("同一个月扣了我两次{amount}，马上退款！", "乱扣费，{amount}到现在还没退，太过分了！",
                         "已经{duration}了退款还没处理，客服态度很差！"),
    ("technical", POSITIVE): ("更新以后{feature}正常了，谢谢技术支持。", "问题很快就解决了，非常满意，服务很好。",
                              "{agent}帮我修好了{product}的问题，很专业。"),
    ("technical", NEUTRAL): ("{product}怎么开启{feature}？", "{product}支持{feature}吗？"),
    ("technical", ANNOYED): ("{product}{error}，希望尽快修复。", "{feature}时好时坏，已经{duration}了。"),
    ("technical", ANGRY): ("{product}{error}，问题一直没有解决！", "{feature}坏了{duration}了，每个月还照样扣钱，太差劲了！",
                           "客服态度很差，问题一直没有解决"),
    ("cancellation", NEUTRAL): ("请问怎么暂停订阅？", "取消以后还能用到月底吗？", "可以从{plan}套餐降级而不是取消吗？"),
    ("cancellation", ANNOYED): ("{plan}套餐越来越贵了，在考虑要不要取消。", "{feature}很少用了，{amount}一个月不太值。",
                                "别家更便宜，考虑换掉。"),
    ("cancellation", ANGRY): ("马上帮我取消订阅，不想再用了！", "我要退订，并且退还{amount}！",
                              "用了{duration}问题不断，我要注销账号。", "已经换别家了，立刻停止自动续费！"),
    ("product_feedback", POSITIVE): ("新的{feature}太好用了！", "{product}改版以后快多了，很喜欢。", "推荐的内容越来越准了，赞！"),
    ("product_feedback", NEUTRAL): ("希望{product}也能有{feature}。", "建议增加{feature}的自定义选项。",
                                    "整体还行，就是{feature}不太好找。"),
    ("product_feedback", ANNOYED): ("新版{product}界面有点乱，找不到{feature}。", "为什么把{feature}去掉了？", "{product}改版后变慢了。"),
    ("product_feedback", ANGRY): ("改版把{product}彻底搞砸了，{feature}根本没法用！", "付费功能说删就删，太坑了！"),
    ("praise", POSITIVE): ("非常满意，服务很好", "用了{duration}了，一直很稳定，推荐！", "客服{agent}很耐心，五星好评！",
                           "{feature}很实用，物超所值。"),
    ("praise", NEUTRAL): ("还不错，基本够用。", "整体挺好的，{feature}比较方便。"),
    ("account", POSITIVE): ("账号很快就找回来了，谢谢！", "客服{agent}帮我解决了登录问题，很专业。"),
    ("account", NEUTRAL): ("怎么修改账号绑定的邮箱？", "{plan}套餐可以添加家庭成员吗？", "怎么开启两步验证？"),
    ("account", ANNOYED): ("{product}老是自动退出登录，很烦。", "重置密码的邮件等了{duration}才收到。"),
    ("account", ANGRY): ("账号被盗了，{duration}都没人处理！", "账号被锁了{duration}，连取消都没办法！"),
}


def _expand(template: str, fillers: dict[str, tuple[str, ...]], capitalise: bool) -> list[str]:
    """All (or an evenly spaced subset of) filler combinations of one template."""
    slots = list(dict.fromkeys(name for _, name, _, _ in string.Formatter().parse(template) if name))
    combos = list(itertools.product(*(fillers[s] for s in slots)))
    step = max(1, len(combos) // _MAX_PER_TEMPLATE)
    out = []
    for combo in combos[::step][:_MAX_PER_TEMPLATE]:
        text = template.format(**dict(zip(slots, combo, strict=True)))
        out.append(_SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text) if capitalise else text)
    return out


@lru_cache(maxsize=1)
def text_bank() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct texts flattened by bucket, with per-bucket ``offsets`` and ``sizes`` of shape (lang, category, tone).

    A bucket's texts are ``texts[offsets[l, c, t] : offsets[l, c, t] + sizes[l, c, t]]``; empty buckets have size 0.
    """
    texts: list[str] = []
    offsets = np.zeros((len(LANGUAGES), len(CATEGORIES), N_TONES), dtype=np.int64)
    sizes = np.zeros_like(offsets)
    for li, (bank, fillers) in enumerate(((_EN, _FILL_EN), (_ZH, _FILL_ZH))):
        for ci, cat in enumerate(CATEGORIES):
            for tone in range(N_TONES):
                bucket = list(dict.fromkeys(
                    t for tpl in bank.get((cat, tone), ()) for t in _expand(tpl, fillers, capitalise=li == 0)
                ))
                offsets[li, ci, tone] = len(texts)
                sizes[li, ci, tone] = len(bucket)
                texts.extend(bucket)
    return np.array(texts, dtype=object), offsets, sizes
