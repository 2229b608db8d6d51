# Firmware version strings, as in esp_app_desc_t.version and OTA manifests: "v1.23.0",
# "1.24.0-preview.123.gabc1234", "v1.22.2-rc1". Releases sort after their previews.


# A sortable tuple, or None when the string has no leading dotted number.
def parse(v):
    s = str(v).strip()
    if s[:1] in ("v", "V"):
        s = s[1:]
    main, rest = (s.split("-", 1) + [""])[:2]
    nums = []
    for p in main.split("."):
        if not p.isdigit():
            return None
        nums.append(int(p))
    while len(nums) < 3:
        nums.append(0)
    pre = 0
    for tok in rest.replace("-", ".").split("."):
        digits = "".join(c for c in tok if c.isdigit())
        if digits:
            pre = int(digits)
            break
    return tuple(nums) + ((0, pre) if rest else (1, 0))


# -1, 0 or 1 as a is older, the same as or newer than b; None if either does not parse.
def compare(a, b):
    pa, pb = parse(a), parse(b)
    if pa is None or pb is None:
        return None
    return (pa > pb) - (pa < pb)
