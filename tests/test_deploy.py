"""What can be checked of the deploy files without an image registry: the Dockerfile builds and starts in
a fresh venv, compose.yaml runs the Procfile's processes, and app.json points at a config that exists."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import ROOT, leaditio_payload, post_webhook, wait_for

SECRET = "a-long-enough-webhook-secret"


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name.strip(): command.strip() for name, _, command in (line.partition(":") for line in lines if line)}


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, with continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    steps = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            steps.append((instruction.upper(), rest.strip()))
    return steps


def test_compose_runs_each_procfile_process_from_the_image_on_postgres():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    for name, command in procfile().items():
        assert shlex.split(services[name]["command"]) == shlex.split(command), name
        assert services[name]["build"] == "." and "DATABASE_URL" in services[name]["environment"]
    assert services["postgres"]["image"].startswith("postgres:")
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["release"]["condition"] == "service_completed_successfully"
    assert services["release"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_dockerfile_default_command_is_the_procfile_web_process():
    cmd = [args for instruction, args in dockerfile() if instruction == "CMD"][-1]
    assert json.loads(cmd) == shlex.split(procfile()["web"])


def test_app_json_config_file_is_in_the_repository():
    app = json.loads((ROOT / "app.json").read_text())
    assert (ROOT / app["env"]["CONNECTOR_CONFIG"]["value"]).is_file()
    assert app["scripts"]["postdeploy"] == procfile()["release"]


@pytest.mark.slow
def test_dockerfile_install_and_start_work_in_a_fresh_venv(tmp_path):
    """Copy what the Dockerfile copies, run its install in a fresh venv, start its CMD, send a lead."""
    app = tmp_path / "app"
    app.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    env["PATH"] = f"{environment / 'bin'}{os.pathsep}{env['PATH']}"
    for instruction, args in dockerfile():
        if instruction == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(args)))
        elif instruction == "COPY":
            *sources, target = shlex.split(args)
            for source in sources:
                destination = app / target / Path(source).name if target.endswith("/") else app / target
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, destination, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(ROOT / source, destination)
        elif instruction == "RUN" and args.startswith("pip "):
            subprocess.run(shlex.split(args), cwd=app, env=env, check=True, capture_output=True, timeout=540)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env.update(PORT=str(port), WEB_CONCURRENCY="1", LEADITIO_WEBHOOK_SECRET=SECRET,
               CONNECTOR_CONFIG=str(app / "config.example.yaml"),  # /app in the image
               DATABASE_URL=f"sqlite:///{tmp_path / 'connector.db'}",  # /data in the image
               CONNECTOR_CONSOLE_PASSWORD="a console password for the image")
    release = procfile()["release"]
    subprocess.run(shlex.split(release), cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    cmd = json.loads([args for instruction, args in dockerfile() if instruction == "CMD"][-1])
    with (tmp_path / "web.log").open("wb") as log:
        server = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return requests.get(f"{url}/healthz", timeout=1).status_code == 200
            except (requests.ConnectionError, requests.Timeout):  # not up yet, or slow on a loaded machine
                return False

        wait_for(healthy, timeout=60)
        answer = post_webhook(url, leaditio_payload("lead_in_docker"), secret=SECRET)
        assert answer.status_code == 200 and answer.json()["status"] == "accepted", answer.text
        # The console's templates and stylesheet are package data: a plain (not editable) install has them.
        login = requests.get(f"{url}/console/login", timeout=10)
        assert login.status_code == 200 and "<h1>Log in</h1>" in login.text, login.text
        assert requests.get(f"{url}/console/static/console.css", timeout=10).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert sys.prefix not in (environment / "bin" / "gunicorn").read_text()  # the fresh venv's own gunicorn
