# What ota.update installs, by firmware identity (ota/identity.py):
# - the same build as the running firmware (equal app_elf_sha256, in the first 288 bytes) is
#   "already running": refused before anything is erased, unless allow_downgrade=True;
# - without a declared version (from_file(url) as glenn20/micropython-esp32-ota v0.3 has it),
#   anything else is installed, and what it replaces is said;
# - a declared version (a manifest's "version", from_file(..., version=)) must be newer than the
#   running firmware's, unless allow_downgrade=True; the image's own version (its
#   esp_app_desc_t.version when set, else the MicroPython banner found while it streams in)
#   must not be older than the declared one, and not older than the running firmware's unless
#   allow_downgrade=True;
# - a build this device rolled back from (ota/history.py) is refused before anything is erased,
#   unless force=True (which also allows what allow_downgrade=True allows).
# A refusal mid-stream aborts: the boot partition stays as it was.

from . import identity, version


class Policy:
    def __init__(self, declared=None, allow_downgrade=False, backend=None, force=False):
        self.declared = declared
        self.allow = allow_downgrade or force
        self.force = force
        self.running = identity.running(backend)

    def _cur(self):
        return self.running["version"] if self.running else None

    # Before anything is fetched: the declared version against the running firmware's.
    def check_declared(self):
        new, cur = self.declared, self._cur()
        if not new or self.allow:
            return
        c = version.compare(new, cur) if cur else None
        if c is None:
            raise ValueError(
                "Cannot compare the manifest version %r with the running firmware's %r: "
                "pass allow_downgrade=True to install it anyway." % (new, cur)
            )
        if c == 0:
            raise ValueError(
                "The manifest version %s is the running firmware's: nothing to do "
                "(allow_downgrade=True installs it again)." % new
            )
        if c < 0:
            raise ValueError(
                "The manifest version %s is older than the running firmware's %s: refused "
                "(allow_downgrade=True allows it)." % (new, cur)
            )

    # The first 288 bytes of the new image (desc: _image.describe() of them), before any erase.
    def check_head(self, head, desc):
        build = identity.build_id(head)
        if build and not self.force:
            from . import history, trust

            if history.rolled_back(build):
                raise ValueError(trust.rolled_back_message(build))
        if build and self.running and build == self.running["build"] and not self.allow:
            raise ValueError(
                "This image is the build already running (app_elf_sha256 %s...): nothing to "
                "do (allow_downgrade=True installs it again)." % build[:16]
            )
        if desc and desc[0]:
            self.check_new(desc[0], "app description")

    # The new image's own version, from its app description or its banner.
    def check_new(self, new, where):
        if self.declared:
            c = version.compare(new, self.declared)
            if c is not None and c < 0 or (c is None and new != self.declared):
                raise ValueError(
                    "The image is version %s (its %s), but the manifest says %s: refused."
                    % (new, where, self.declared)
                )
        if not self.declared or self.allow:
            return
        cur = self._cur()
        c = version.compare(new, cur) if cur else None
        if c is not None and c < 0:
            raise ValueError(
                "The image is version %s (its %s), older than the running firmware's %s: "
                "refused (allow_downgrade=True allows it)." % (new, where, cur)
            )

    # Called with (version, date, machine) when the banner turns up in the streaming image.
    def banner(self, found):
        self.check_new(found[0], "MicroPython banner")
