"""The subtree splitter against a brute-force delimited LIST of the same keys."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from s3encfs.fs.treelist import SubtreeSplitter
from s3encfs.store.s3 import ObjectInfo

ROOT = "r/"


def delimited(keys: list[str], prefix: str) -> tuple[list[str], set[str]]:
    files, prefixes = [], set()
    for k in keys:
        if not k.startswith(prefix):
            continue
        rel = k[len(prefix):]
        if "/" in rel:
            prefixes.add(prefix + rel.split("/")[0] + "/")
        else:
            files.append(k)
    return files, prefixes


component = st.sampled_from(["a", "b", "a-b", "a.b", "ä", "z", ""])
key_strategy = st.lists(component, min_size=1, max_size=4).map(lambda cs: ROOT + "/".join(cs))


@settings(max_examples=300, deadline=None)
@given(st.lists(key_strategy, min_size=0, max_size=60, unique=True),
       st.integers(min_value=1, max_value=7), st.integers(min_value=0, max_value=60))
def test_split_matches_delimited_lists(keys, page_size, stop_after):
    keys = sorted(set(keys) | {"r/.s3encfs/idx/x", "q/outside"})
    sp = SubtreeSplitter(ROOT, skip="r/.s3encfs/")
    tree = [k for k in keys if k.startswith(ROOT) and not k.startswith("r/.s3encfs/")]
    got = {}
    pages = [keys[i:i + page_size] for i in range(0, len(keys), page_size)]
    stopped = len(pages) > stop_after
    for n, page in enumerate(pages[:stop_after]):
        done = sp.add_page([ObjectInfo(k, 0, "e", 0.0, None) for k in page], now=float(n))
        assert not set(done) & set(got), "a directory completed twice"
        got.update(done)
    if not stopped:
        got.update(sp.finish(now=99.0))
    for prefix, listing in got.items():
        files, prefixes = delimited(tree, prefix)
        assert [o.key for o in listing.files] == files, prefix
        assert listing.prefixes == prefixes, prefix
    if not stopped:  # every directory of the tree was handed out
        dirs = {ROOT} | {p for k in tree for p in delimited([k], ROOT)[1]}
        for k in tree:
            rel = k[len(ROOT):].split("/")[:-1]
            dirs |= {ROOT + "/".join(rel[:i + 1]) + "/" for i in range(len(rel))}
        assert set(got) == dirs
    else:
        assert ROOT not in got  # the root is never complete before the end


def test_a_directory_completes_as_soon_as_the_listing_passes_it():
    sp = SubtreeSplitter(ROOT)
    done = sp.add_page([ObjectInfo(k, 0, "e", 0.0, None)
                        for k in ("r/a/", "r/a/1", "r/a/b/2", "r/c/3")], now=1.0)
    assert set(done) == {"r/a/", "r/a/b/"}
    assert [o.key for o in done["r/a/"].files] == ["r/a/", "r/a/1"]
    assert done["r/a/"].sorted_prefixes() == ["r/a/b/"]
    assert sp.pending() == ["r/", "r/c/"]
    rest = sp.finish(now=2.0)
    assert rest["r/"].sorted_prefixes() == ["r/a/", "r/c/"] and rest["r/c/"].at == 2.0
