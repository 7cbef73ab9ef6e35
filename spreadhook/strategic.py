"""Strategic merge patch (SMP) of a Pod, exactly as kube-apiserver applies it.

A WorkloadSpread subset carries a ``patch`` that upstream applies with ``strategicpatch.StrategicMergePatch(pod,
patch, &corev1.Pod{})``; the API server runs the same code for ``application/strategic-merge-patch+json``. Users
read the result as "what my subset does to the pod", and a later check compares this module with a real API
server, so this is a port of the Go algorithm (``k8s.io/apimachinery/pkg/util/strategicpatch``, v0.37.2), not a
simplification of it. ``/work/shared/reference/pod-smp.md`` describes it step by step; the comments below cite
its sections (``§3.4`` ...).

Three choices shape the code:

* **Go value semantics.** JSON values keep Go's types: ``1``, ``1.0``, ``True`` and ``"1"`` are four different
  merge keys (§3.0). Every comparison goes through :func:`_eq` or :func:`_hkey`, never bare ``==``. Where Go
  panics (comparing two maps, hashing a map) we raise :class:`PatchError` instead, as the server answers 500.
* **Copy on write.** Go mutates a private decoded copy; we never mutate the caller's objects. Every map and
  list on the patched path is a new object; untouched subtrees of the pod are shared with the result, which is
  what keeps one application in the tens of microseconds.
* **Raw merge, then normalization.** Values the Go code copies from the patch unprocessed (new list items,
  replaced lists, ``$patch: replace`` maps) keep nulls and ``$`` keys in the merged map, and later steps of the
  same merge can see them. The consumers of the result (upstream's webhook, the API server) then decode it
  into a typed Pod, which drops those leftovers. So :class:`_Merge` first reproduces the Go map exactly, noting
  which containers it built and which it took from the patch, and :meth:`_Merge.finish` then cleans only those
  (§3.11): nulls the pod itself carried (``creationTimestamp: null``) are left alone.

The one place the Go result is random (§3.10: a value both added to and deleted from a primitive list in the
same patch, because Go visits map keys in random order) is made deterministic here: ``$deleteFromPrimitiveList``
keys run after all other keys, so the deletion wins.
"""

from __future__ import annotations

import decimal
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeGuard

from spreadhook.pod_schema import ROOT, STRUCTS, Field

__all__ = ["PatchError", "apply_pod_patch", "validate_pod_patch"]

_PATCH: Final = "$patch"
_RETAIN_KEYS: Final = "$retainKeys"
_SET_ORDER: Final = "$setElementOrder"
_DELETE_FROM: Final = "$deleteFromPrimitiveList"

# Go's names for the types a decoded JSON value can have; they double as type tags and appear in messages.
_MAP: Final = "map[string]interface {}"
_SLICE: Final = "[]interface {}"
_NIL: Final = "%!s(<nil>)"
_GO_TYPES: Final[dict[type, str]] = {
    dict: _MAP, list: _SLICE, str: "string", int: "int64", float: "float64", bool: "bool", type(None): _NIL,
}

#: The metadata fields a subset patch may not change (the pod's identity and its owner).
IDENTITY_FIELDS: Final = ("name", "namespace", "ownerReferences")


class PatchError(ValueError):
    """A patch kube-apiserver would refuse; str() is a clear message naming the path."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self._path: list[str] = []  # innermost segment first: filled while the error unwinds

    def within(self, segment: str) -> PatchError:
        """Prefix the path with ``segment``; called by each enclosing level, so the happy path pays nothing."""
        self._path.append(segment)
        return self

    @property
    def path(self) -> str:
        """Where in the patch the problem is, like ``spec.containers[0].env`` (empty at the top level)."""
        out = ""
        for segment in reversed(self._path):
            out += segment if segment.startswith("[") or not out else "." + segment
        return out

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self._path else self.message


# --------------------------------------------------------------------------------------------------
# Public API


def apply_pod_patch(pod: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Return a new pod dict = SMP(pod, patch) for the core/v1 Pod schema. Never mutates its inputs.

    The result is what a typed consumer sees (§3.11): leftover ``$`` directives and nulls that came from the
    patch are dropped. It shares unchanged subtrees with ``pod``, so copy before editing it in place. Raises
    :class:`PatchError` for a patch the API server would refuse, and for one that changes the pod's
    ``metadata.name``, ``namespace`` or ``ownerReferences``, which spreadhook never lets a subset do.
    """
    if not _is_mapping(pod) or not _is_mapping(patch):
        raise PatchError("invalid JSON document")
    merge = _Merge()
    result = merge.finish(merge.merge_map(pod, patch, ROOT))
    _refuse_identity_change(pod, result)
    return result


def validate_pod_patch(patch: Any) -> list[str]:
    """Errors (field path + what is allowed) for a subset patch before it is ever applied: not a JSON object,
    changes metadata.name / metadata.namespace / metadata.ownerReferences (spreadhook refuses those), malformed
    directives.

    This is the static half of the check: it needs no pod, so the WorkloadSpread can be refused when it is
    created rather than when its first pod arrives. Errors that depend on the pod (an original list item that
    lacks its merge key, ...) surface from :func:`apply_pod_patch`.
    """
    if not _is_mapping(patch):
        return [f"patch: must be a JSON object (a strategic merge patch of a Pod), not {_json_type(patch)}"]
    errors: list[str] = []
    _check_identity_untouched(patch, errors)
    _check_map(patch, ROOT, "", errors)
    return errors


# --------------------------------------------------------------------------------------------------
# Go value semantics (§3.0)


def _gotype(value: Any) -> str:
    """The Go dynamic type of a decoded JSON value; two values are comparable only when these are equal."""
    found = _GO_TYPES.get(type(value))
    if found is not None:
        return found
    if _is_mapping(value):
        return _MAP
    if isinstance(value, list | tuple):
        return _SLICE
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    raise PatchError(f"not a JSON value: {value!r}")


def _eq(left: Any, right: Any) -> bool:
    """Go interface equality: same dynamic type and value; two maps or two lists make Go panic."""
    kind = _gotype(left)
    if kind != _gotype(right):
        return False
    if kind in (_MAP, _SLICE):
        raise PatchError(f"runtime error: comparing uncomparable type {kind} (kube-apiserver panics: 500)")
    return bool(left == right)


def _hkey(value: Any) -> tuple[str, Any]:
    """A hashable stand-in for a scalar under Go equality (``True`` and ``1`` differ); Go panics on a map."""
    kind = _gotype(value)
    if kind in (_MAP, _SLICE):
        raise PatchError(f"runtime error: hash of unhashable type {kind} (kube-apiserver panics: 500)")
    return kind, value


def _is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    """A JSON object (the exact-type test first: the ABC check is slow and this runs on every merged item)."""
    return type(value) is dict or isinstance(value, Mapping)


def _is_list(value: Any) -> TypeGuard[list[Any] | tuple[Any, ...]]:
    return type(value) is list or isinstance(value, list | tuple)


# --------------------------------------------------------------------------------------------------
# Go's error texts (§3.9): kept verbatim so they can be compared with the server's answers


def _gov(value: Any) -> str:
    """Go's ``%v``: maps print as ``map[k:v ...]`` with sorted keys, lists as ``[a b]``."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _gofloat(value)
    if _is_mapping(value):
        return "map[" + " ".join(f"{k}:{_gov(v)}" for k, v in sorted(value.items())) + "]"
    if _is_list(value):
        return "[" + " ".join(_gov(v) for v in value) + "]"
    return str(value)


def _gofloat(value: float) -> str:
    """Go's shortest ``%g``: exponent form below 1e-4 and from 1e6 on (1000000.0 prints ``1e+06``)."""
    if value == 0:
        return "0"
    sign, digit_tuple, exponent = decimal.Decimal(repr(value)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + int(exponent)
    text = ""
    if point - 1 < -4 or point - 1 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        text = f"{mantissa}e{'-' if point - 1 < 0 else '+'}{abs(point - 1):02d}"
    elif point <= 0:
        text = "0." + "0" * -point + digits
    else:
        text = digits[:point] + "0" * (point - len(digits)) + ("." + digits[point:] if point < len(digits) else "")
    return ("-" if sign else "") + text


def _gos(value: Any) -> str:
    """Go's ``%s``: a string as is, anything else flagged the way fmt does."""
    if isinstance(value, str):
        return value
    if value is None:
        return _NIL
    return f"%!s({_gotype(value).replace(' {}', '{}')}={_gov(value)})"


def _no_merge_key(item: Mapping[str, Any], key: str) -> PatchError:
    return PatchError(f"map: {_gov(item)} does not contain declared merge key: {key}")


def _bad_arg_type(expected: str, actual: Any) -> PatchError:
    return PatchError(f"expected a {expected}, but received a {_gotype(actual)}")


def _bad_patch_type(directive: Any, where: Mapping[str, Any]) -> PatchError:
    return PatchError(f"unknown patch type: {_gos(directive)} in map: {_gov(where)}")


def _extract_key(key: str, prefix: str, error: str) -> str:
    """``$prefix/<name>`` -> ``<name>`` (Go's extractKey: split at the first ``/``, prefix must match)."""
    head, slash, name = key.partition("/")
    if not slash or head != prefix:
        raise PatchError(error)
    return name


# --------------------------------------------------------------------------------------------------
# Schema lookup (§3.1): the Pod's struct tags, from pod_schema


def _fold(key: str) -> str:
    """Go's case-insensitive field matching, for the ASCII names struct fields have (Kelvin sign and long s
    fold onto ``k`` and ``s`` there too)."""
    return key.replace("\u212a", "k").replace("\u017f", "s").lower()


def _build_tables() -> tuple[dict[str, dict[str, Field]], dict[str, dict[str, Field]]]:
    """Exact and case-folded field tables, keyed both by struct name and by ``*name`` (reached via a pointer)."""
    exact: dict[str, dict[str, Field]] = {}
    folded: dict[str, dict[str, Field]] = {}
    for name, fields in STRUCTS.items():
        fold: dict[str, Field] = {}
        for json_name, field in fields.items():
            fold.setdefault(_fold(json_name), field)  # the first field in declaration order wins, as in Go
        exact[name] = exact["*" + name] = fields
        folded[name] = folded["*" + name] = fold
    return exact, folded


_FIELDS, _FOLDED = _build_tables()


def _struct_field(schema: str, key: str) -> Field:
    """The field ``key`` of ``schema``; looked up only where both sides hold a map or both a list (§3.1)."""
    fields = _FIELDS.get(schema)
    if fields is None:
        raise PatchError(f"merging an object in json but data type is not struct, instead is: {schema}")
    field = fields.get(key) or _FOLDED[schema].get(_fold(key))
    if field is None:
        name = schema.lstrip("*")
        raise PatchError(
            f"unable to find api field in struct {name} for the json field {json.dumps(key, ensure_ascii=False)}"
        )
    return field


def _list_field(schema: str, key: str) -> Field:
    """Like :func:`_struct_field`, for a list; Go unwraps pointers, so only plain struct/scalar fields fail."""
    field = _struct_field(schema, key)
    if field[1] is None:
        raise PatchError(f"expected slice or array type, but got: {'ptr' if schema.startswith('*') else 'struct'}")
    return field


def _kind_name(elem: str) -> str:
    """``reflect.Kind`` of a list element, as Go names it in "cannot merge lists without merge key for ..."."""
    return "struct" if elem in _FIELDS else elem


# --------------------------------------------------------------------------------------------------
# Cleaning values taken from the patch (§3.2 remove-directives, §3.7)

_DROP: Final = object()


def _clean(value: Any, drop_nulls: bool) -> Any:
    """A copy of a patch value without maps that carry ``$patch`` (and, for a fresh key, without null map
    entries). Returns ``_DROP`` when the value itself is such a map: Go then does not set the key at all."""
    if _is_mapping(value):
        if drop_nulls:
            value = {k: v for k, v in value.items() if v is not None}
        if _PATCH in value:
            return _DROP
        out = {}
        for k, v in value.items():
            cleaned = _clean(v, drop_nulls)
            if cleaned is not _DROP:
                out[k] = cleaned
        return out
    if _is_list(value):
        return [c for c in (_clean(v, drop_nulls) for v in value) if c is not _DROP]
    return value


def _normalized(value: Any) -> Any:
    """A deep copy as a typed decode leaves it (§3.11): no null map entries and no ``$`` keys."""
    if _is_mapping(value):
        return {k: _normalized(v) for k, v in value.items() if v is not None and not k.startswith("$")}
    if _is_list(value):
        return [_normalized(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------
# Ordering (§3.3 step 4, §3.4): Go's normalizeElementOrder, including its sort's quirks


class _MissingKey:
    """Stands for an absent merge key in a lookup table: equal to nothing, as Go's ``ok && ==`` requires."""

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = object.__hash__


_Missing: Final = _MissingKey()

#: Exact JSON scalar types; distinct Python types keep Go's ``true != 1 != 1.0`` apart in a dict key.
_SCALAR_TYPES: Final[dict[type, type]] = {str: str, int: int, float: float, bool: bool, type(None): type(None)}


class _Index:
    """First position of each key in a list, with Go equality: a dict when every key is a scalar, a scan
    (which raises Go's panic where Go has one) otherwise. ``_Missing`` entries (no merge key) match nothing."""

    __slots__ = ("_keys", "_pos")

    def __init__(self, keys: list[Any]) -> None:
        self._keys = keys
        self._pos: dict[tuple[type, Any], int] | None = {}
        for i, key in enumerate(keys):
            self._note(key, i)

    def _note(self, key: Any, position: int) -> None:
        if self._pos is None or key is _Missing:
            return
        kind = _SCALAR_TYPES.get(type(key))
        if kind is None:
            self._pos = None  # a map or list key: only Go's linear scan gives Go's answer (or panic)
        else:
            self._pos.setdefault((kind, key), position)

    def append(self, key: Any) -> None:
        self._keys.append(key)
        self._note(key, len(self._keys) - 1)

    def find(self, key: Any) -> int:
        kind = _SCALAR_TYPES.get(type(key))
        if self._pos is not None and kind is not None:
            return self._pos.get((kind, key), -1)
        for i, candidate in enumerate(self._keys):
            if candidate is not _Missing and _eq(key, candidate):
                return i
        return -1


def _keys_of(items: Iterable[Any], merge_key: str | None) -> list[Any]:
    """What ``index()`` compares: the merge-key value of each map (lists already validated), or the item."""
    if merge_key is None:
        return list(items)
    return [item.get(merge_key) for item in items]


def _require_merge_key(merge_key: str, *lists: Sequence[Any]) -> None:
    """Go's validateMergeKeyInLists: every item a map holding the merge key."""
    for items in lists:
        for item in items:
            if not _is_mapping(item):
                raise _bad_arg_type(_MAP, item)
            if merge_key not in item:
                raise _no_merge_key(item, merge_key)


def _go_stable_sort(items: list[Any], less: Callable[[int, int], bool]) -> list[Any]:
    """Go's ``sort.SliceStable`` step for step (insertion sort in blocks of 20, then SymMerge), for the one case
    where Go's comparator is inconsistent (an item missing from the reference order) and so the result
    depends on the algorithm. ``less`` compares positions in ``order``, which is permuted alongside ``items``."""
    order = list(range(len(items)))

    def lt(i: int, j: int) -> bool:
        return less(order[i], order[j])

    def swap(i: int, j: int) -> None:
        order[i], order[j] = order[j], order[i]

    def insertion(a: int, b: int) -> None:
        for i in range(a + 1, b):
            j = i
            while j > a and lt(j, j - 1):
                swap(j, j - 1)
                j -= 1

    def rotate(a: int, m: int, b: int) -> None:
        i, j = m - a, b - m
        while i != j:
            if i > j:
                for k in range(j):
                    swap(m - i + k, m + k)
                i -= j
            else:
                for k in range(i):
                    swap(m - i + k, m + j - i + k)
                j -= i
        for k in range(i):
            swap(m - i + k, m + k)

    def sym_merge(a: int, m: int, b: int) -> None:
        if m - a == 1:
            i, j = m, b
            while i < j:
                h = (i + j) >> 1
                if lt(h, a):
                    i = h + 1
                else:
                    j = h
            for k in range(a, i - 1):
                swap(k, k + 1)
            return
        if b - m == 1:
            i, j = a, m
            while i < j:
                h = (i + j) >> 1
                if not lt(m, h):
                    i = h + 1
                else:
                    j = h
            for k in range(m, i, -1):
                swap(k, k - 1)
            return
        mid = (a + b) >> 1
        n = mid + m
        start, r = (n - b, mid) if m > mid else (a, m)
        p = n - 1
        while start < r:
            c = (start + r) >> 1
            if not lt(p - c, c):
                start = c + 1
            else:
                r = c
        end = n - start
        if start < m < end:
            rotate(start, m, end)
        if a < start < mid:
            sym_merge(a, start, mid)
        if mid < end < b:
            sym_merge(mid, end, b)

    n, block = len(order), 20
    a = 0
    while a + block <= n:
        insertion(a, a + block)
        a += block
    insertion(a, n)
    while block < n:
        a = 0
        while a + 2 * block <= n:
            sym_merge(a, a + block, a + 2 * block)
            a += 2 * block
        if a + block < n:
            sym_merge(a, a + block, n)
        block *= 2
    return [items[i] for i in order]


def _sort_by(items: list[Any], order: Sequence[Any], merge_key: str | None) -> tuple[list[Any], _Index]:
    """Go's normalizeSliceOrder: sort by first position in ``order``; ``$patch: delete`` items go last.
    Also returns the index over ``order``, which the interleave step reuses."""
    doomed: list[Any] = []
    if merge_key is not None:
        _require_merge_key(merge_key, items, order)
        doomed = [item for item in items if _eq_str(item.get(_PATCH), "delete")]
        if doomed:
            items = [item for item in items if not _eq_str(item.get(_PATCH), "delete")]
    index = _Index(_keys_of(order, merge_key))
    positions = [index.find(key) for key in _keys_of(items, merge_key)]
    if all(p >= 0 for p in positions):
        ranked = sorted(range(len(items)), key=positions.__getitem__)  # consistent comparator: any stable sort
        return [items[i] for i in ranked] + doomed, index

    def less(i: int, j: int) -> bool:
        return positions[i] < positions[j] if positions[i] >= 0 and positions[j] >= 0 else True

    return _go_stable_sort(items, less) + doomed, index


def _order(
    server: list[Any], patched: list[Any], server_order: Sequence[Any], patch_order: Sequence[Any],
    merge_key: str | None,
) -> list[Any]:
    """Go's normalizeElementOrder: server-only items sorted by ``server_order``, patched ones by
    ``patch_order``, then interleaved (§3.4)."""
    patched, _ = _sort_by(patched, patch_order, merge_key)
    server, reference = _sort_by(server, server_order, merge_key)
    return _interleave(server, patched, reference, merge_key)


def _eq_str(value: Any, text: str) -> bool:
    return isinstance(value, str) and value == text


def _interleave(server: list[Any], patched: list[Any], index: _Index, merge_key: str | None) -> list[Any]:
    """Go's mergeSortedSlice (§3.4): take the server-only head only when both heads occur in the reference
    order (``index``) and it comes first there; so new items go out as soon as they reach the head of the
    patch queue."""
    if not server or not patched:
        return server + patched
    server_pos = [index.find(key) for key in _keys_of(server, merge_key)]
    patched_pos = [index.find(key) for key in _keys_of(patched, merge_key)]
    out: list[Any] = []
    i = j = 0
    while i < len(server) and j < len(patched):
        if server_pos[i] >= 0 and patched_pos[j] >= 0 and server_pos[i] < patched_pos[j]:
            out.append(server[i])
            i += 1
        else:
            out.append(patched[j])
            j += 1
    return out + server[i:] + patched[j:]


def _element_type(*lists: Sequence[Any]) -> str:
    """Go's sliceElementType: one Go type for every element of the lists being merged (§3.3 step 0)."""
    first: str | None = None
    for items in lists:
        for value in items:
            kind = _gotype(value)
            if first is None:
                if kind == _NIL:
                    raise PatchError(
                        "runtime error: invalid memory address or nil pointer dereference "
                        "(null first list element; kube-apiserver panics: 500)"
                    )
                if kind == _SLICE:
                    raise PatchError("lists of lists are not supported")
                first = kind
            elif kind != first:
                raise PatchError(f"list element types are not identical: [{' '.join(_gov(x) for x in lists)}]")
    if first is None:
        raise PatchError("no elements in any of the given slices")
    return first


def _partition(items: list[Any], by: Sequence[Any], merge_key: str) -> tuple[list[Any], list[Any]]:
    """Go's partition{Maps,Primitives}ByPresentInList: (items present in ``by``, the others), in order."""
    if not merge_key:
        present = {_hkey(value) for value in by}
        inside = [value for value in items if _hkey(value) in present]
        return inside, [value for value in items if _hkey(value) not in present]
    # Go scans ``by`` for each item and fails on a non-map entry it reaches before a match.
    usable = next((i for i, c in enumerate(by) if not _is_mapping(c)), len(by))
    index = _Index([c.get(merge_key, _Missing) for c in by[:usable]])
    inside, outside = [], []
    for item in items:
        if not _is_mapping(item):
            raise _bad_arg_type(_MAP, item)
        if merge_key not in item:
            raise _no_merge_key(item, merge_key)
        if index.find(item[merge_key]) >= 0:
            inside.append(item)
        elif usable < len(by):
            raise PatchError(f"value for key {usable} is not a map")
        else:
            outside.append(item)
    return inside, outside


def _merge_key_equal(item: Any, entry: Any, merge_key: str) -> bool:
    """Go's mergeKeyValueEqual, used when checking a ``$setElementOrder`` list against the patch list."""
    if not merge_key:
        return _eq(item, entry)
    for value in (item, entry):
        if not _is_mapping(value):
            raise _bad_arg_type(_MAP, value)
        if merge_key not in value:
            raise _no_merge_key(value, merge_key)
    return _eq(item[merge_key], entry[merge_key])


def _check_order(patch_list: Sequence[Any], order: Sequence[Any], merge_key: str) -> None:
    """Go's validatePatchWithSetOrderList (§3.6 step 2): the patch items, in the directive's relative order."""
    if not order or not patch_list:
        return
    items = list(patch_list)
    if merge_key:
        for item in items:
            if not _is_mapping(item):
                raise _bad_arg_type(_MAP, item)
        items = [item for item in items if not _eq_str(item.get(_PATCH), "delete")]
    i = j = 0
    while i < len(items) and j < len(order):
        if _is_mapping(items[i]) and _PATCH in items[i]:
            i += 1
            continue
        if _merge_key_equal(items[i], order[j], merge_key):
            i += 1
        j += 1
    if i < len(items) and j >= len(order):
        raise PatchError(
            f"The order in patch list:\n{_gov(patch_list)}\n doesn't match $setElementOrder list:\n{_gov(order)}\n"
        )


# --------------------------------------------------------------------------------------------------
# The merge


class _Merge:
    """One application of a patch. Records the containers it creates (``made``) and the patch values it puts
    in the result unprocessed (``fresh``), so :meth:`finish` can clean exactly those and nothing of the pod."""

    __slots__ = ("_fresh", "_made")

    def __init__(self) -> None:
        # id -> object; holding the object keeps its id from being reused during the merge.
        self._fresh: dict[int, Any] = {}
        self._made: dict[int, Any] = {}

    # ---- bookkeeping

    def _new(self, source: Any, built: Any) -> Any:
        """Register a container built from ``source``; copies of patch values stay patch values."""
        (self._fresh if id(source) in self._fresh else self._made)[id(built)] = built
        return built

    def _raw(self, value: Any) -> Any:
        """A patch value placed in the result as is (Go aliases it; normalized by :meth:`finish`)."""
        if _is_mapping(value) or _is_list(value):
            self._fresh[id(value)] = value
        return value

    def finish(self, value: Any) -> Any:
        """Drop ``$`` keys and patch nulls from what this merge built, in place (§3.11); pod subtrees are shared
        and left untouched."""
        if id(value) in self._fresh:
            return _normalized(value)
        if id(value) not in self._made:
            return value
        if isinstance(value, dict):
            for key in [k for k in value if k.startswith("$")]:
                del value[key]
            for key, child in value.items():
                if id(child) in self._fresh or id(child) in self._made:
                    value[key] = self.finish(child)
        else:
            for i, child in enumerate(value):
                if id(child) in self._fresh or id(child) in self._made:
                    value[i] = self.finish(child)
        return value

    # ---- maps (§3.2)

    def merge_map(self, original: Mapping[str, Any] | None, patch: Mapping[str, Any], schema: str) -> dict[str, Any]:
        """Go's mergeMap: ``$patch``, then ``$retainKeys``, then ``$setElementOrder``, then the other keys."""
        if _PATCH in patch:
            return self._map_directive(patch)
        result: dict[str, Any] = self._new(original, dict(original) if original is not None else {})
        if _RETAIN_KEYS in patch:
            _retain_keys(result, patch)
        done: set[str] = set()
        deletions: list[tuple[str, Any]] = []
        key = ""
        try:
            for key in [k for k in patch if k.startswith(_SET_ORDER)]:
                done.add(key)
                self._set_element_order(result, patch, key, schema, done)
            for key, value in patch.items():
                if key in done or key == _RETAIN_KEYS:
                    continue
                if key.startswith(_DELETE_FROM):
                    deletions.append((key, value))  # after every other key: see the module docstring
                else:
                    self._merge_key(result, key, value, schema, False)
            for key, value in deletions:
                name = _extract_key(key, _DELETE_FROM, "invalid patch format of primitive list")
                self._merge_key(result, name or key, value, schema, True)
        except PatchError as error:
            raise error.within(key) from None
        return result

    def _map_directive(self, patch: Mapping[str, Any]) -> dict[str, Any]:
        """``$patch`` in a map being merged (§3.8): replace keeps the rest raw, delete leaves ``{}``."""
        directive = patch[_PATCH]
        if _eq_str(directive, "replace"):
            return self._raw({k: v for k, v in patch.items() if k != _PATCH})
        if _eq_str(directive, "delete"):
            return self._new(None, {})
        raise _bad_patch_type(directive, patch)

    def _merge_key(self, result: dict[str, Any], key: str, value: Any, schema: str, delete_list: bool) -> None:
        """One patch key (§3.2 step 5). ``delete_list``: a ``$deleteFromPrimitiveList/<key>`` value."""
        if value is None:
            result.pop(key, None)
            return
        if key not in result or (
            type(result[key]) is not type(value) and _gotype(result[key]) != _gotype(value)
        ):
            if not delete_list:
                cleaned = _clean(value, drop_nulls=True)
                if cleaned is _DROP:
                    result.pop(key, None)
                else:
                    result[key] = self._raw(cleaned)
            return
        current = result[key]
        if _is_mapping(value):
            result[key] = self.merge_map(current, value, _struct_field(schema, key)[0])
        elif _is_list(value):
            field = _list_field(schema, key)
            if field[2] or delete_list:
                result[key] = self._merge_list(current, value, field, delete_list)[0]
            else:
                result[key] = self._raw(value)
        else:
            result[key] = value

    # ---- lists (§3.3, §3.5)

    def _merge_list(
        self, original: Sequence[Any], patch: Sequence[Any], field: Field, delete_list: bool
    ) -> tuple[list[Any], list[Any]]:
        """Go's mergeSlice. Also returns the reference order Go's ``$setElementOrder`` code ends up reading
        through slice aliasing (§3.6 step 5)."""
        if not original and not patch:
            return original, original  # type: ignore[return-value]  # Go returns the original slice itself
        kind = _element_type(original, patch)
        elem, merge_key = field[1] or "", field[3]
        if kind != _MAP:
            return self._merge_scalars(original, patch, merge_key, delete_list), list(original)
        if not merge_key:
            raise PatchError(f"cannot merge lists without merge key for {_kind_name(elem)}")
        return self._merge_maps(original, patch, elem, merge_key)

    def _merge_scalars(
        self, original: Sequence[Any], patch: Sequence[Any], merge_key: str, delete_list: bool
    ) -> list[Any]:
        """A primitive list (finalizers; any list for ``$deleteFromPrimitiveList``): an ordered set (§3.5)."""
        if delete_list:
            doomed = {_hkey(value) for value in patch}
            return self._new(original, [value for value in original if _hkey(value) not in doomed])
        merged: list[Any] = []
        seen: set[tuple[str, Any]] = set()
        for value in (*original, *patch):
            if _hkey(value) not in seen:
                seen.add(_hkey(value))
                merged.append(value)
        inside, outside = _partition(merged, patch, merge_key)
        ordered = _order(outside, inside, original, patch, None)
        return self._new(original, ordered)

    def _merge_maps(
        self, original: Sequence[Any], patch: Sequence[Any], elem: str, merge_key: str
    ) -> tuple[list[Any], list[Any]]:
        """A list of maps merged by key: directive items, then merge or append, then order (§3.3)."""
        reference = list(original)
        aliased, alive = list(original), len(original)  # Go's backing array, as $setElementOrder reads it
        plain: list[tuple[int, Any]] = []
        replace = False
        for position, item in enumerate(patch):
            if _PATCH not in item:
                plain.append((position, item))
                continue
            directive = item[_PATCH]
            if _eq_str(directive, "delete"):
                if merge_key not in item:
                    raise _no_merge_key(item, merge_key).within(f"[{position}]")
                reference, alive = _delete_matching(reference, aliased, alive, merge_key, item[merge_key])
            elif _eq_str(directive, "replace"):
                replace = True
            elif _eq_str(directive, "merge"):
                raise PatchError("merging lists cannot yet be specified in the patch").within(f"[{position}]")
            else:
                raise _bad_patch_type(directive, item).within(f"[{position}]")
        items = [item for _, item in plain]
        if replace:
            kept = [self._raw(item) for item in items]
            _require_merge_key(merge_key, kept)
            return self._new(original, _order(kept, [], kept, [], merge_key)), aliased
        work = self._merge_items(reference, plain, elem, merge_key, aliased, alive)
        inside, outside = _partition(work, items, merge_key)
        ordered = _order(outside, inside, reference, items, merge_key)
        return self._new(original, ordered), aliased

    def _merge_items(
        self,
        reference: list[Any],
        plain: list[tuple[int, Any]],
        elem: str,
        merge_key: str,
        aliased: list[Any],
        alive: int,
    ) -> list[Any]:
        """Merge each patch item into the first item with its key, or append it raw (§3.3 step 3)."""
        work = list(reference)
        index = _Index([item.get(merge_key, _Missing) for item in work])
        for position, item in plain:
            if merge_key not in item:
                raise _no_merge_key(item, merge_key).within(f"[{position}]")
            found = index.find(item[merge_key])
            if found >= 0:
                try:
                    work[found] = self.merge_map(work[found], item, elem)
                except PatchError as error:
                    raise error.within(f"[{position}]") from None
            else:
                work.append(self._raw(item))
                index.append(item[merge_key])
                if alive < len(aliased):
                    aliased[alive] = item
                alive += 1
        return work

    # ---- $setElementOrder (§3.6)

    def _set_element_order(
        self, result: dict[str, Any], patch: Mapping[str, Any], key: str, schema: str, done: set[str]
    ) -> None:
        """Merge the named list first, then order it by the directive, interleaving the items it omits."""
        order = patch[key]
        if not _is_list(order):
            raise _bad_arg_type(_SLICE, order)
        name = _extract_key(key, _SET_ORDER, "invalid patch format of setElementOrder list")
        in_original, in_patch = name in result, name in patch
        original: Sequence[Any] = result[name] if in_original else []
        patched: Sequence[Any] = patch[name] if in_patch else []
        for present, value in ((in_original, original), (in_patch, patched)):
            if present and not _is_list(value):
                raise _bad_arg_type(_SLICE, value)
        field = _list_field(schema, name)
        merge_key = field[3]
        _check_order(patched, order, merge_key)
        reference: Sequence[Any] = original
        if in_original and in_patch:
            if field[2]:
                merged, reference = self._merge_list(original, patched, field, False)
            else:
                merged = self._raw(patched)
        elif in_patch:
            merged = self._raw(_clean(patched, drop_nulls=False))
        elif in_original:
            merged = list(original)
        else:
            return
        inside, outside = _partition(merged, order, merge_key)
        by_key = merge_key if _element_type(original, patched) == _MAP else None
        ordered = _order(outside, inside, reference, order, by_key)
        result[name] = self._new(original, ordered)
        done.add(name)


def _delete_matching(
    reference: list[Any], aliased: list[Any], alive: int, merge_key: str, value: Any
) -> tuple[list[Any], int]:
    """``$patch: delete`` in a merge list: drop every item with that key, and replay Go's in-place removal on
    its backing array (the tail keeps stale items) for the ``$setElementOrder`` reference order."""
    kept = [item for item in reference if not (merge_key in item and _eq(item[merge_key], value))]
    while True:
        hit = next((i for i in range(alive) if merge_key in aliased[i] and _eq(aliased[i][merge_key], value)), -1)
        if hit < 0:
            return kept, alive
        aliased[hit : alive - 1] = aliased[hit + 1 : alive]
        alive -= 1


def _retain_keys(result: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """``$retainKeys`` (§3.2 step 3): every set patch key must be listed; unlisted original keys go."""
    listed = patch[_RETAIN_KEYS]
    if not _is_list(listed):
        raise PatchError("invalid patch format of retainKeys").within(_RETAIN_KEYS)
    allowed = {_hkey(value) for value in listed}
    for key, value in patch.items():
        if key == _RETAIN_KEYS or value is None or key.startswith((_DELETE_FROM, _SET_ORDER)):
            continue
        if ("string", key) not in allowed:
            raise PatchError(f"invalid patch format of retainKeys ({key!r} is not listed)").within(_RETAIN_KEYS)
    for key in [k for k in result if ("string", k) not in allowed]:
        del result[key]


# --------------------------------------------------------------------------------------------------
# Identity fields: spreadhook's own rule, on top of the API server's


_IDENTITY_FOLDED: Final = {_fold(name): name for name in IDENTITY_FIELDS}


def _refuse_identity_change(pod: Mapping[str, Any], result: Mapping[str, Any]) -> None:
    """The patched pod must keep its name, namespace and owners: a subset moves pods, it does not rename or
    re-parent them (and the API server would refuse most of it anyway)."""
    before, after = pod.get("metadata"), result.get("metadata")
    before = before if _is_mapping(before) else {}
    after = after if _is_mapping(after) else {}
    for name in IDENTITY_FIELDS:
        if (name in before) != (name in after) or (name in before and before[name] != after[name]):
            raise PatchError(f"spreadhook refuses patches that change metadata.{name}").within(f"metadata.{name}")
    for key in after:
        if key not in IDENTITY_FIELDS and _fold(key) in _IDENTITY_FOLDED:
            raise PatchError(f"{key!r} would be decoded as metadata.{_IDENTITY_FOLDED[_fold(key)]}, which spreadhook "
                             "refuses to change").within(f"metadata.{key}")



# --------------------------------------------------------------------------------------------------
# Static validation


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if _is_list(value) else type(value).__name__


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check_identity_untouched(patch: Mapping[str, Any], errors: list[str]) -> None:
    """Any construct that could alter name, namespace or ownerReferences, whatever the pod holds."""
    if _PATCH in patch:
        errors.append("$patch: not allowed at the top level (it would replace or delete the whole pod)")
    if _RETAIN_KEYS in patch and (not _is_list(patch[_RETAIN_KEYS]) or "metadata" not in patch[_RETAIN_KEYS]):
        errors.append("$retainKeys: must list \"metadata\" (the pod's name and owners live there)")
    if "metadata" not in patch:
        return
    metadata = patch["metadata"]
    if not _is_mapping(metadata):
        errors.append(f"metadata: must be an object of labels/annotations/... to merge, not {_json_type(metadata)}")
        return
    if _PATCH in metadata:
        errors.append("metadata.$patch: not allowed (it would replace or clear the pod's name and owners)")
    retained = metadata.get(_RETAIN_KEYS)
    if _is_list(retained) and any(name not in retained for name in IDENTITY_FIELDS):
        errors.append(f"metadata.$retainKeys: must list {', '.join(IDENTITY_FIELDS)} (unlisted keys are cleared)")
    for key in metadata:
        field = key.partition("/")[2] if key.startswith((_DELETE_FROM, _SET_ORDER)) else key
        if _fold(field) in _IDENTITY_FOLDED:
            errors.append(f"metadata.{key}: spreadhook refuses patches that change "
                          f"metadata.{_IDENTITY_FOLDED[_fold(field)]}")


def _schema_of(schema: str | None, key: str) -> Field | None:
    """The field ``key`` of ``schema``, or None where the patch leaves the Pod's structs (labels, unknown keys)."""
    if schema is None or schema not in _FIELDS:
        return None
    return _FIELDS[schema].get(key) or _FOLDED[schema].get(_fold(key))


def _check_map(patch: Mapping[str, Any], schema: str | None, path: str, errors: list[str]) -> None:
    """Directives of one patch map and, recursively, of the maps and lists below it."""
    for key, value in patch.items():
        where = _join(path, key)
        if key == _PATCH:
            if not (_eq_str(value, "replace") or _eq_str(value, "delete")):
                errors.append(f"{where}: must be \"replace\" or \"delete\" in a map, not {json.dumps(value)}")
        elif key == _RETAIN_KEYS:
            _check_retain_keys(patch, value, where, errors)
        elif key.startswith(_SET_ORDER):
            _check_list_directive(patch, key, value, _SET_ORDER, schema, where, errors)
        elif key.startswith(_DELETE_FROM):
            _check_list_directive(patch, key, value, _DELETE_FROM, schema, where, errors)
        elif key.startswith("$"):
            errors.append(f"{where}: unknown directive (allowed: $patch, $retainKeys, $setElementOrder/<list>, "
                          "$deleteFromPrimitiveList/<list>)")
        else:
            _check_value(value, _schema_of(schema, key), where, errors)


def _check_value(value: Any, field: Field | None, path: str, errors: list[str]) -> None:
    if _is_mapping(value):
        _check_map(value, field[0] if field else None, path, errors)
    elif _is_list(value):
        if field is not None and field[2] and field[3]:
            _check_merge_list(value, field, path, errors)
        else:
            for i, item in enumerate(value):
                if _is_mapping(item) and _PATCH in item:
                    errors.append(f"{path}[{i}].$patch: has no effect in a list without a merge key (the list is "
                                  "replaced as a whole); send the whole list instead")
                elif _is_mapping(item):
                    _check_map(item, field[1] if field else None, f"{path}[{i}]", errors)


def _check_merge_list(items: Sequence[Any], field: Field, path: str, errors: list[str]) -> None:
    """Items of a list merged by key: each names its key; ``$patch`` is delete (with key) or replace."""
    merge_key = field[3]
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        if not _is_mapping(item):
            errors.append(f"{where}: must be an object with \"{merge_key}\" (the list is merged by {merge_key})")
            continue
        directive = item.get(_PATCH)
        if _PATCH in item and _eq_str(directive, "replace"):
            continue
        if _PATCH in item and not _eq_str(directive, "delete"):
            errors.append(f"{where}.$patch: must be \"delete\" or \"replace\" in a list, not {json.dumps(directive)}")
        elif merge_key not in item:
            errors.append(f"{where}: missing merge key \"{merge_key}\"")
        elif _PATCH not in item:
            _check_map(item, field[1], where, errors)


def _check_retain_keys(patch: Mapping[str, Any], value: Any, path: str, errors: list[str]) -> None:
    if not _is_list(value) or not all(isinstance(v, str) for v in value):
        errors.append(f"{path}: must be a list of field names")
        return
    missing = [k for k, v in patch.items()
               if v is not None and not k.startswith("$") and k not in value]
    if missing:
        errors.append(f"{path}: must list every field the patch sets; missing {', '.join(sorted(missing))}")


def _check_list_directive(
    patch: Mapping[str, Any], key: str, value: Any, prefix: str, schema: str | None, path: str, errors: list[str]
) -> None:
    """``$setElementOrder/<list>`` and ``$deleteFromPrimitiveList/<list>``: shape, target, order."""
    head, slash, name = key.partition("/")
    if head != prefix or not slash or not name:
        errors.append(f"{path}: must be written {prefix}/<list field>")
        return
    if not _is_list(value):
        errors.append(f"{path}: must be a list, not {_json_type(value)}")
        return
    field = _schema_of(schema, name)
    if schema in _FIELDS and (field is None or field[1] is None):
        errors.append(f"{path}: {name!r} is not a list field here")
        return
    if prefix == _DELETE_FROM:
        if any(_is_mapping(v) or _is_list(v) for v in value):
            errors.append(f"{path}: must list plain values (strings, numbers) to remove")
        return
    merge_key = field[3] if field and field[2] else ""
    if field is not None and field[1] in _FIELDS and not merge_key:
        errors.append(f"{path}: {name!r} has no merge key, so its order cannot be set (send the whole list)")
        return
    try:
        if merge_key:
            _require_merge_key(merge_key, value)
        elif any(_is_mapping(v) or _is_list(v) for v in value):
            raise PatchError("must list plain values")
        patched = patch.get(name)
        _check_order(patched if _is_list(patched) else [], value, merge_key)
    except PatchError as error:
        errors.append(f"{path}: {error.message}")
