# -*- coding: utf-8 -*-
"""The site module of a Python 2.7 environment written by kiln.

Python 2 ignores pyvenv.cfg (PEP 405 is Python 3.3+). Its interpreter finds sys.prefix from its
own location (Modules/getpath.c: the landmark lib/python2.7/os.py, and lib/python2.7/lib-dynload
for sys.exec_prefix), so the env holds a copy of the interpreter and those landmarks, and this
file is the first module Python imports from it. It points sys.path at the image's standard
library, turns the user's site-packages off, runs the image's own site module (quit, help,
encodings, sitecustomize; it adds no system site-packages, as sys.prefix is the env), then adds
the env's site-packages, its .pth files processed. virtualenv's site.py for Python 2 works the
same way. Only built-in modules are imported before sys.path is rewritten.
"""
import sys


def _kiln_env_main():
    here = __file__
    lib = here[: here.rindex("/")]
    prefix = lib[: lib.rindex("/lib/")]
    cfg = {}
    try:
        f = open(prefix + "/pyvenv.cfg")
        try:
            for line in f:
                if "=" in line:
                    key, value = line.split("=", 1)
                    cfg[key.strip()] = value.strip()
        finally:
            f.close()
    except IOError:
        pass
    home = cfg.get("home", "/usr/bin")
    base = home[: home.rindex("/")] or "/"
    sys.real_prefix = base
    sys.base_prefix = base
    sys.base_exec_prefix = base
    env_lib = prefix + "/lib/"
    sys.path[:] = [
        base + p[len(prefix):] if p.startswith(env_lib) else p for p in sys.path
    ]

    class _Flags(object):
        """sys.flags with no_user_site set: the user's site-packages stay off."""

        def __init__(self, flags):
            for key in dir(flags):
                if not key.startswith("_"):
                    setattr(self, key, getattr(flags, key))
            self.no_user_site = 1

    sys.flags = _Flags(sys.flags)
    reload(sys.modules["site"])  # noqa: F821 - the image's site.py, found on the new sys.path
    site = sys.modules["site"]
    site.ENABLE_USER_SITE = False
    if cfg.get("include-system-site-packages", "false").lower() == "true":
        for d in site.getsitepackages() if hasattr(site, "getsitepackages") else []:
            site.addsitedir(d.replace(prefix, base, 1))
    site.addsitedir(lib + "/site-packages")


_kiln_env_main()
