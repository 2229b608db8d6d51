# What ota.update installs, by firmware identity (ota/identity.py):
# - the same build as the running firmware (equal app_elf_sha256: the manifest's "build", or the
#   image's first 288 bytes) is "already running": refused before anything is erased, unless
#   allow_downgrade=True. Only the build says "nothing to do": the same version in another build
#   (a rebuild: the same MicroPython with other frozen modules) installs;
# - without a declared version (from_file(url) as glenn20/micropython-esp32-ota v0.3 has it),
#   anything else is installed, and what it replaces is said;
# - a declared version (a manifest's "version", from_file(..., version=)) must not be older than
#   the running firmware's, unless allow_downgrade=True; the image's own version (its
#   esp_app_desc_t.version when set, else the MicroPython banner found while it streams in)
#   must not be older than the declared one, and not older than the running firmware's unless
#   allow_downgrade=True;
# - a release version of the user's own (`mpota manifest --version 2.3.1`: the manifest's
#   "version" differs from its "micropython", MicroPython's version in the image) is compared
#   with the release version this device installed the running build as (ota/history.py), or
#   its PROJECT_VER; a device that knows none (flashed over USB) takes the release. The image's
#   banner is then checked against the manifest's "micropython";
# - a bare git hash ("8675309", what `git describe --always` prints without a tag) is not a
#   version: it cannot be ordered, and is refused unless allow_downgrade=True;
# - a build this device rolled back from (ota/history.py) is refused before anything is erased,
#   unless force=True (which also allows what allow_downgrade=True allows).
# Builds of one version are ordered by the signed manifest's "sequence" (ota/trust.py).
# A refusal mid-stream aborts: the boot partition stays as it was.

from . import identity, version

_HASH = "a git hash (git describe without a tag), not a version"


class Policy:
    # declared: the version to install; micropython: the manifest's "micropython" (MicroPython's
    # version in the image, when "version" is a release version of the user's own); build: the
    # manifest's "build" (app_elf_sha256, hex).
    def __init__(
        self,
        declared=None,
        allow_downgrade=False,
        backend=None,
        force=False,
        micropython=None,
        build=None,
    ):
        self.declared = declared
        self.mp = micropython
        self.own = bool(declared and micropython and declared != micropython)
        self.build = build
        self.allow = allow_downgrade or force
        self.force = force
        self.running = identity.running(backend)

    def _running_build(self):
        return self.running["build"] if self.running else None

    # The running firmware's version of the declared version's kind, or None if none is known.
    def _cur(self):
        if not self.running:
            return None
        if self.own:
            from . import history

            rel = history.release(self.running["build"])
            if rel:
                return rel
            return self.running["version"] if self.running["source"] == "app" else None
        return self.running["version"]

    # Before anything is fetched: the declared version against the running firmware's. Returns
    # a line to tell the user (a rebuild, a first release version), or None.
    def check_declared(self):
        new, cur = self.declared, self._cur()
        build = self._running_build()
        if self.build and build and self.build == build and not self.allow:
            raise ValueError(
                "The manifest's build %s... is the build already running: nothing to do "
                "(allow_downgrade=True installs it again)." % self.build[:16]
            )
        if not new or self.allow:
            return None
        if version.is_hash(new):
            raise ValueError(
                "The manifest version %r is %s: it cannot be ordered against the running "
                "firmware's %r (allow_downgrade=True installs it anyway)." % (new, _HASH, cur)
            )
        if cur and version.is_hash(cur):
            raise ValueError(
                "The running firmware's version %r is %s: the manifest version %r cannot be "
                "ordered against it (allow_downgrade=True installs it anyway)." % (cur, _HASH, new)
            )
        if cur is None and self.own:
            return (
                "This device knows no release version for the running firmware: installing "
                "release %s." % new
            )
        c = version.compare(new, cur) if cur else None
        if c is None:
            raise ValueError(
                "Cannot compare the manifest version %r with the running firmware's %r: "
                "pass allow_downgrade=True to install it anyway." % (new, cur)
            )
        if c == 0:
            if not self.build:  # the image's head tells (check_head)
                return None
            return "Version %s again, another build (%s... after %s...): a rebuild." % (
                new,
                self.build[:8],
                (build or "?")[:8],
            )
        if c < 0:
            raise ValueError(
                "The manifest version %s is older than the running firmware's %s: refused "
                "(allow_downgrade=True allows it)." % (new, cur)
            )
        return None

    # The first 288 bytes of the new image (desc: _image.describe() of them), before any erase.
    def check_head(self, head, desc):
        build = identity.build_id(head)
        if build and not self.force:
            from . import history, trust

            if history.rolled_back(build):
                raise ValueError(trust.rolled_back_message(build))
        if build and build == self._running_build() and not self.allow:
            raise ValueError(
                "This image is the build already running (app_elf_sha256 %s...): nothing to "
                "do (allow_downgrade=True installs it again)." % build[:16]
            )
        if self.build and build and build != self.build:
            raise ValueError(
                "The image is build %s..., but the manifest says %s...: refused."
                % (build[:16], self.build[:16])
            )
        if desc and desc[0]:
            self.check_new(desc[0], "app description")

    # The new image's own version, from its app description or its banner.
    def check_new(self, new, where):
        banner = where == "MicroPython banner"
        want = self.mp if self.own and banner else self.declared
        if want:
            c = version.compare(new, want)
            if c is not None and c < 0 or (c is None and new != want):
                raise ValueError(
                    "The image is version %s (its %s), but the manifest says %s: refused."
                    % (new, where, want)
                )
        # A release version of the user's own was compared in check_declared().
        if not self.declared or self.allow or self.own:
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

    # The image is the boot partition: remember the release version it was installed as.
    def installed(self):
        if self.own:
            from . import history

            history.set_release(self.declared)
