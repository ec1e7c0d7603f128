"""Short, realistic review titles and texts in English, Chinese and code-switched Chinese/English.

The traffic generator draws from these pools by index, so the pools are built once at import time
from a few openers and details. Sentiment classes follow the rating: negative (1-2 stars), neutral
(3) and positive (4-5).
"""

from __future__ import annotations

from itertools import product

__all__ = ["SENTIMENTS", "LANGS", "TEXTS", "TITLES", "sentiment_of_rating"]

SENTIMENTS = ("negative", "neutral", "positive")
"""Sentiment classes, indexed 0..2."""

LANGS = ("en", "zh")
"""Review languages, indexed 0..1 (code-switched texts are tagged ``zh``)."""

_EN = {
    "positive": (
        ["Love it!", "Great value for money.", "Exactly as described.", "Really happy with this.",
         "Five stars from me.", "Better than I expected.", "Would buy again.", "Excellent quality."],
        ["Arrived two days early.", "The material feels solid.", "My kids use it every day.",
         "Works perfectly out of the box.", "Fits true to size.", "Battery lasts all week.",
         "Packaging was neat and tidy.", "Customer service answered within an hour."],
    ),
    "neutral": (
        ["It's okay.", "Does the job.", "Average product.", "Not bad, not great.", "Fine for the price."],
        ["Shipping took a while.", "The colour is a bit different from the photos.",
         "Instructions could be clearer.", "Slightly smaller than I thought.", "Nothing special."],
    ),
    "negative": (
        ["Very disappointed.", "Do not buy this.", "Waste of money.", "Terrible quality.",
         "Returned it the next day.", "Stopped working after a week."],
        ["It broke the first time I used it.", "The seller never replied to my emails.",
         "Arrived damaged and with parts missing.", "Smells like cheap plastic.",
         "Nothing like the pictures.", "The zipper fell off immediately.", "Refund still not processed."],
    ),
}

_ZH = {
    "positive": (
        ["非常满意！", "性价比很高。", "质量很好。", "和描述的一样。", "会回购的。", "超出预期。"],
        ["物流很快，第二天就到了。", "做工精细，手感不错。", "包装很仔细。", "客服态度很好。",
         "孩子很喜欢。", "用了一周，一切正常。"],
    ),
    "neutral": (
        ["还可以吧。", "一般般。", "中规中矩。", "凑合能用。"],
        ["物流有点慢。", "颜色和图片有点差别。", "说明书不太清楚。", "尺码偏小一点。"],
    ),
    "negative": (
        ["非常失望。", "质量太差了。", "不建议购买。", "完全是浪费钱。", "已经退货了。"],
        ["用了一次就坏了。", "卖家一直不回复。", "收到的时候包装破损。", "和图片完全不一样。",
         "有一股很重的塑料味。", "退款到现在还没到账。"],
    ),
}

# Code-switched texts, as written by bilingual shoppers; tagged "zh".
_MIXED = {
    "positive": ["quality很好，推荐！", "delivery超快，very happy", "这个price真的很值", "design很nice，喜欢"],
    "neutral": ["还行吧，just okay", "size有点小，其他ok", "一般般，nothing special"],
    "negative": ["quality很差", "完全是waste of money", "用了两天就broken了", "customer service太差了",
                 "refund到现在还没处理，very angry"],
}

_TITLES = {
    ("positive", "en"): ["Great!", "Highly recommend", "Love it", "Perfect", "Worth every cent", "Very good"],
    ("neutral", "en"): ["OK", "Average", "It's fine", "Mixed feelings"],
    ("negative", "en"): ["Disappointed", "Broken", "Avoid", "Poor quality", "Not as described"],
    ("positive", "zh"): ["好评", "很满意", "推荐购买", "值得"],
    ("neutral", "zh"): ["一般", "还行", "中评"],
    ("negative", "zh"): ["差评", "失望", "质量差", "不推荐"],
}


def _combine(pools: tuple[list[str], list[str]], sep: str) -> list[str]:
    openers, details = pools
    return [f"{a}{sep}{b}" for a, b in product(openers, details)] + list(openers)


def _build() -> tuple[dict[tuple[str, str], tuple[str, ...]], dict[tuple[str, str], tuple[str, ...]]]:
    texts: dict[tuple[str, str], tuple[str, ...]] = {}
    for sentiment in SENTIMENTS:
        texts[sentiment, "en"] = tuple(_combine(_EN[sentiment], " "))
        texts[sentiment, "zh"] = tuple(_combine(_ZH[sentiment], "") + _MIXED[sentiment] * 3)
    titles = {key: tuple(value) for key, value in _TITLES.items()}
    return texts, titles


TEXTS, TITLES = _build()
"""``(sentiment, lang) -> texts`` and ``(sentiment, lang) -> titles``."""


def sentiment_of_rating(rating: int) -> str:
    """The sentiment class a star rating belongs to."""
    return "negative" if rating <= 2 else "neutral" if rating == 3 else "positive"
