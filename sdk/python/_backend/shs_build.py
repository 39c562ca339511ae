"""A PEP 517 build backend for shs-sdk that needs nothing but the standard library.

Why not setuptools: pip builds in an isolated environment and would download setuptools into
it, so `pip install ./sdk/python` would fail offline. The package is one module, so building its
wheel is simple enough to do here: the module, METADATA (from pyproject.toml and README.md),
WHEEL and RECORD, zipped. Also builds an sdist and an editable wheel (PEP 660).
"""

import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = "shs_sdk.py"
TAG = "py3-none-any"


def _project():
    """The simple `key = "value"` entries of pyproject.toml's [project] table."""
    project, section = {}, None
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("["):
                section = line.strip("[]").strip()
                continue
            match = re.match(r'^([A-Za-z0-9_-]+)\s*=\s*"(.*)"$', line)
            if section == "project" and match:
                project[match.group(1)] = match.group(2)
    return project


def _names():
    project = _project()
    name, version = project["name"], project["version"]
    dist = re.sub(r"[-_.]+", "_", name).lower()
    return project, name, version, dist


def _metadata():
    project, name, version, _ = _names()
    lines = [
        "Metadata-Version: 2.1",
        "Name: %s" % name,
        "Version: %s" % version,
        "Summary: %s" % project.get("description", ""),
        "Requires-Python: %s" % project.get("requires-python", ">=3.8"),
        "License: MIT OR Apache-2.0",
        "Description-Content-Type: text/markdown",
    ]
    readme = os.path.join(ROOT, "README.md")
    body = ""
    if os.path.exists(readme):
        with open(readme, encoding="utf-8") as f:
            body = f.read()
    return ("\n".join(lines) + "\n\n" + body).encode("utf-8")


def _wheel_file():
    return ("Wheel-Version: 1.0\nGenerator: shs_build\nRoot-Is-Purelib: true\nTag: %s\n"
            % TAG).encode("utf-8")


def _record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d" % (path, digest, len(data))


def _write_wheel(wheel_directory, files):
    _, _, version, dist = _names()
    info = "%s-%s.dist-info" % (dist, version)
    files = list(files) + [
        ("%s/METADATA" % info, _metadata()),
        ("%s/WHEEL" % info, _wheel_file()),
    ]
    record = [_record_line(path, data) for path, data in files]
    record.append("%s/RECORD,," % info)
    files.append(("%s/RECORD" % info, ("\n".join(record) + "\n").encode("utf-8")))
    filename = "%s-%s-%s.whl" % (dist, version, TAG)
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w",
                         zipfile.ZIP_DEFLATED) as wheel:
        for path, data in files:
            wheel.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return filename


def _read(name):
    with open(os.path.join(ROOT, name), "rb") as f:
        return f.read()


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory, [(MODULE, _read(MODULE))])


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _, _, _, dist = _names()
    return _write_wheel(wheel_directory, [("%s.pth" % dist, (ROOT + "\n").encode("utf-8"))])


def build_sdist(sdist_directory, config_settings=None):
    _, _, version, dist = _names()
    base = "%s-%s" % (dist, version)
    filename = base + ".tar.gz"
    members = [MODULE, "pyproject.toml", "README.md", "_backend/shs_build.py"]
    members += ["tests/" + t for t in sorted(os.listdir(os.path.join(ROOT, "tests")))
                if t.endswith(".py")]
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz") as sdist:
        for member in members:
            data = _read(member)
            info = tarfile.TarInfo("%s/%s" % (base, member))
            info.size = len(data)
            info.mtime = 1577836800
            sdist.addfile(info, io.BytesIO(data))
        pkg_info = _metadata()
        info = tarfile.TarInfo("%s/PKG-INFO" % base)
        info.size = len(pkg_info)
        info.mtime = 1577836800
        sdist.addfile(info, io.BytesIO(pkg_info))
    return filename
