import pytest

from service.core.lru import LruCache


def test_builds_once_per_key_and_evicts_the_least_recently_used():
    built = []
    cache = LruCache(2)

    def get(key):
        return cache.get(key, lambda: built.append(key) or f"value {key}")

    assert get("a") == "value a"
    assert get("b") == "value b"
    assert get("a") == "value a"  # cached; "b" is now the least recently used
    get("c")
    assert len(cache) == 2
    get("a")
    get("b")  # evicted by "c": built again
    assert built == ["a", "b", "c", "b"]


def test_size_must_be_positive():
    with pytest.raises(ValueError, match="'size' must be >= 1, got 0"):
        LruCache(0)
