# Firmware version strings as MicroPython and git make them, compared:
#   "v1.24.0"                       a release tag (MICROPY_GIT_TAG), "1.24.0" (os.uname().release)
#   "v1.24.0-preview.123.gabcdef0"  the 123rd commit towards v1.24.0: older than v1.24.0, newer
#                                   than any v1.23.x ("1.24.0-preview": os.uname().release)
#   "v1.24.0-5-gabcdef0"            git describe: 5 commits after the tag, newer than it
#   "...-dirty"                     uncommitted changes on top: just after the same clean build
#   "v1.24.0.1"                     four (or more) parts, compared numerically
#   "v1.22.2-rc1"                   a release candidate: before v1.22.2
# A bare hash, as `git describe --always` prints it where no tag is reachable (7 to 40 hex
# digits, "-dirty" maybe: "8675309", "abcdef0"), an empty string or anything else without a
# leading dotted number cannot be compared: parse() and compare() return None. A hash of digits
# alone is still a hash (is_hash()); a short number ("1", ESP-IDF's PROJECT_VER outside git) is a
# version.


# True for what `git describe --always [--dirty]` prints without a tag: an abbreviated hash.
def is_hash(v):
    s = str(v).strip()
    if s.endswith("-dirty"):
        s = s[:-6]
    return 7 <= len(s) <= 40 and not [c for c in s if c not in "0123456789abcdef"]


# (numbers, stage, count, dirty): stage 0 before the release (preview, rc), 1 at or after it;
# count: the preview's or the describe string's commit count. None when it does not parse.
def parse(v):
    if is_hash(v):
        return None
    s = str(v).strip()
    if s[:1] in ("v", "V"):
        s = s[1:]
    parts = s.split("-")
    nums = []
    for p in parts[0].split("."):
        if not p.isdigit():
            return None
        nums.append(int(p))
    dirty = 0
    rest = parts[1:]
    if rest and rest[-1] == "dirty":
        dirty = 1
        rest = rest[:-1]
    stage, count = 1, 0
    if rest:
        first = rest[0]
        if first.isdigit():  # git describe: -N-gHASH
            count = int(first)
        else:  # preview.N.gHASH, rc1, beta2...
            stage = 0
            for tok in "-".join(rest).replace("-", ".").split("."):
                digits = ""
                for c in tok:
                    if c.isdigit():
                        digits += c
                    elif digits:
                        break
                if digits and not tok.startswith("g"):
                    count = int(digits)
                    break
    return (nums, stage, count, dirty)


# -1, 0 or 1 as a is older than, the same as or newer than b; None if either does not parse.
def compare(a, b):
    pa, pb = parse(a), parse(b)
    if pa is None or pb is None:
        return None
    na, nb = pa[0], pb[0]
    n = max(len(na), len(nb), 3)
    ka = [na[i] if i < len(na) else 0 for i in range(n)] + list(pa[1:])
    kb = [nb[i] if i < len(nb) else 0 for i in range(n)] + list(pb[1:])
    return (ka > kb) - (ka < kb)
