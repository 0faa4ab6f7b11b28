"""Containment: every escape a run may try, with a cgroup per attempt and with process groups.

Each worker notes every process it makes (pid and start time, ``escape_workers.note``); a
test passes only if none of those is alive afterwards, whatever their parentage. The two
modes differ where process groups cannot follow: those rows say what process groups really
do, as README's "Containment" table does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

import escape_workers as escape
from conftest import wait_for
from orchestrator import ContainmentError, WorkerOrchestrator
from orchestrator.execution import cgroups
from orchestrator.execution.base import RunSpec
from orchestrator.execution.process import ProcessExecutor
from orchestrator.runs import Outcome

RESULT_WAIT = 60
SAFETY_TIMEOUT = 60.0
MB = 1024 * 1024
REPO = Path(__file__).resolve().parent.parent
MODES = ["cgroup", "process-group"]


@pytest.fixture(params=MODES)
def executor(request):
    executor = ProcessExecutor(containment=request.param)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


def spec(function, argument, **options) -> RunSpec:
    options.setdefault("timeout_seconds", SAFETY_TIMEOUT)
    return RunSpec(run_id="r", worker=function.__name__, function=function, argument=argument,
                   pass_argument=True, **options)


def run(executor, function, argument, **options):
    return executor.submit_run(spec(function, argument, **options)).result(RESULT_WAIT)


def nothing_left(pid_file: Path) -> None:
    assert escape.noted(str(pid_file)), "the worker noted no process"
    wait_for(lambda: not escape.alive(str(pid_file)), timeout=15,
             message=f"every process noted in {pid_file.name} gone")


def files(tmp_path: Path, name: str = "w") -> tuple[str, str]:
    return str(tmp_path / f"{name}.pids"), str(tmp_path / f"{name}.ready")


# -- processes that leave ------------------------------------------------------------------------

@pytest.mark.parametrize("worker", [escape.python_daemon, escape.disguised_daemon],
                         ids=["fork-setsid-fork", "exec-empty-env-fake-name"])
def test_a_daemon_dies_with_its_run(executor, tmp_path, worker):
    pid_file, ready = files(tmp_path)
    result = run(executor, worker, (pid_file, ready))
    assert result.outcome is Outcome.SUCCEEDED, result.error
    nothing_left(Path(pid_file))


def test_children_in_new_groups_die_on_timeout_ten_runs_at_once(executor, tmp_path):
    futures = []
    for number in range(10):
        pid_file, ready = files(tmp_path, f"w{number}")
        futures.append(executor.submit_run(spec(escape.new_group_then_hang, (pid_file, ready),
                                                timeout_seconds=1.0, kill_grace_seconds=0.5)))
    results = [future.result(RESULT_WAIT) for future in futures]
    assert [result.outcome for result in results] == [Outcome.TIMED_OUT] * 10
    for number in range(10):
        nothing_left(tmp_path / f"w{number}.pids")


def test_two_hundred_children_each_in_its_own_group(executor, tmp_path):
    pid_file, ready = files(tmp_path)
    future = executor.submit_run(spec(escape.many_groups, (pid_file, ready, 200),
                                      timeout_seconds=SAFETY_TIMEOUT, kill_grace_seconds=0.5))
    wait_for(lambda: os.path.exists(ready), timeout=60, message="200 children made")
    assert len(escape.alive(pid_file)) == 201
    future.kill()
    assert future.result(RESULT_WAIT).outcome is Outcome.CANCELLED
    nothing_left(Path(pid_file))


def test_a_pid_hopper_dies_with_its_run_beside_a_busy_one(executor, tmp_path):
    busy_pids, busy_ready = files(tmp_path, "busy")
    release = str(tmp_path / "release")
    busy = executor.submit_run(spec(escape.busy_with_sleeps,
                                    (busy_pids, busy_ready, release, 300)))
    wait_for(lambda: os.path.exists(busy_ready), timeout=60, message="300 sleeps started")
    hopper_pids, hopper_ready = files(tmp_path, "hopper")
    name = f"hopper{os.getpid() % 100000}"
    result = run(executor, escape.pid_hopper, (hopper_pids, hopper_ready, name))
    assert result.outcome is Outcome.SUCCEEDED, result.error
    # Every hop carries the name (a fork inherits it): none alive means the lineage is dead.
    wait_for(lambda: not escape.named(name), timeout=15, message="the lineage gone")
    nothing_left(Path(hopper_pids))
    assert len(escape.alive(busy_pids)) == 300  # the busy run lost nothing
    Path(release).touch()
    assert busy.result(RESULT_WAIT).outcome is Outcome.SUCCEEDED
    assert not escape.named(name)  # and it never came back
    nothing_left(Path(busy_pids))


def test_a_run_that_kills_its_launcher_leaves_nothing(executor, tmp_path, subreaper):
    pid_file, ready = files(tmp_path)
    launcher = executor.submit_run(spec(escape.python_daemon, (str(tmp_path / "x"),
                                                               str(tmp_path / "x.ready"))))
    launcher.result(RESULT_WAIT)
    result = run(executor, escape.kill_own_launcher, (pid_file, ready))
    assert result.outcome is Outcome.CRASHED
    assert "the launcher" in result.error and "died (killed by SIGKILL)" in result.error
    nothing_left(Path(pid_file))
    assert run(executor, escape.allocate, 1).outcome is Outcome.SUCCEEDED  # a new launcher


# -- memory --------------------------------------------------------------------------------------

def test_a_big_allocation_is_stopped_at_the_limit(executor):
    result = run(executor, escape.allocate, 2048, memory_limit_mb=100, kill_grace_seconds=0)
    assert result.outcome is Outcome.MEMORY_EXCEEDED, result.error
    if executor.containment == "cgroup":
        assert result.peak_rss_bytes <= 100 * MB  # the kernel's limit: never past it
        assert result.peak_rss_bytes >= 90 * MB


def test_a_burst_shorter_than_a_sample(executor):
    result = run(executor, escape.burst, 800, memory_limit_mb=100, kill_grace_seconds=0)
    if executor.containment == "cgroup":
        assert result.outcome is Outcome.MEMORY_EXCEEDED, result.error
        assert result.peak_rss_bytes <= 100 * MB
    else:  # sampling every 0.5 s does not see it (README says so)
        assert result.outcome in (Outcome.SUCCEEDED, Outcome.MEMORY_EXCEEDED)


def test_children_over_the_limit_together(executor, tmp_path):
    pid_file = str(tmp_path / "children.pids")
    result = run(executor, escape.children_holding, (6, 100, pid_file, 2.0),
                 memory_limit_mb=300, kill_grace_seconds=0)
    assert result.outcome is Outcome.MEMORY_EXCEEDED, result.error
    if executor.containment == "cgroup":
        assert 270 * MB <= result.peak_rss_bytes <= 300 * MB  # the tree's, at the limit
    else:  # the tree's as sampled, which can overshoot the limit
        assert result.peak_rss_bytes >= 300 * MB
    nothing_left(Path(pid_file))


def test_peak_memory_is_the_whole_trees(tmp_path):
    executor = ProcessExecutor(containment="cgroup")
    try:
        result = run(executor, escape.children_holding, (4, 100, str(tmp_path / "pids"), 0))
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert 400 * MB * 0.9 <= result.peak_rss_bytes <= 400 * MB * 1.1


# -- limits only a cgroup has --------------------------------------------------------------------

def test_pids_limit_stops_a_fork_bomb(tmp_path):
    executor = ProcessExecutor(containment="cgroup")
    pid_file, ready = files(tmp_path)
    try:
        future = executor.submit_run(spec(escape.fork_bomb, (pid_file, ready), pids_limit=30,
                                          timeout_seconds=SAFETY_TIMEOUT, kill_grace_seconds=0))
        wait_for(lambda: os.path.exists(ready) and Path(ready).read_text(), timeout=30,
                 message="forking failed at the limit")
        assert int(Path(ready).read_text()) == 29  # 30 processes: the run and 29 children
        future.kill()
        assert future.result(RESULT_WAIT).outcome is Outcome.CANCELLED
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    nothing_left(Path(pid_file))


def test_cpu_limit_caps_the_cores_a_run_gets():
    executor = ProcessExecutor(containment="cgroup")
    try:
        result = run(executor, escape.burn_cpu, 2.0, cpu_limit=0.25)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert 0.3 <= result.result <= 0.7  # a quarter of a core for two seconds
    assert result.cpu_seconds == pytest.approx(result.result, abs=0.1)


def test_limits_that_need_a_cgroup_are_refused_without_one():
    orchestrator = WorkerOrchestrator(containment="process-group")
    for field, value in (("pids_limit", 10), ("cpu_limit", 0.5)):
        with pytest.raises(Exception) as raised:
            orchestrator.register_worker("w", escape.allocate, **{field: value})
        assert str(raised.value).startswith(f"worker 'w': {field} needs cgroup containment")


def test_containment_is_in_the_status():
    orchestrator = WorkerOrchestrator(containment="process-group")
    assert orchestrator.get_status()["containment"] == "process-group"
    orchestrator = WorkerOrchestrator()
    status = orchestrator.get_status()
    assert status["containment"] == "cgroup"  # every machine of this project has them
    assert "membership and kill" in status["containment_detail"]


@pytest.fixture
def unprivileged():
    """A directory the unprivileged user ``nobody`` may use, and its interpreter reachable:
    directories on the way to it get the traverse bit for others while the test runs."""
    import shutil
    import stat
    import tempfile

    changed = []
    for path in [Path(sys.executable).resolve(), Path(sys.prefix).resolve(), REPO]:
        for directory in [path, *path.parents]:
            mode = directory.stat().st_mode
            if directory.is_dir() and not mode & stat.S_IXOTH:
                directory.chmod(mode | stat.S_IXOTH)
                changed.append((directory, mode))
    place = Path(tempfile.mkdtemp(prefix="orchestrator-unprivileged-"))
    place.chmod(0o777)
    try:
        yield place
    finally:
        shutil.rmtree(place, ignore_errors=True)
        for directory, mode in reversed(changed):
            directory.chmod(mode)


def as_nobody(command: list[str], cwd: Path, **options) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, user="nobody",
                          group="nogroup", extra_groups=[], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}",
                               "HOME": str(cwd)}, **options)


def test_cgroup_containment_refuses_in_one_line_where_there_are_none(unprivileged):
    """A process whose cgroups it may not write (an unprivileged user outside a delegated
    subtree) gets one line that says what is missing and how to get it."""
    script = unprivileged / "refuse.py"
    script.write_text(textwrap.dedent("""
        from orchestrator import ContainmentError, WorkerOrchestrator
        try:
            WorkerOrchestrator(containment="cgroup")
        except ContainmentError as error:
            print(error)
        print(WorkerOrchestrator().get_status()["containment"])
    """))
    done = as_nobody([sys.executable, str(script)], unprivileged)
    assert done.returncode == 0, done.stderr
    refusal, auto = done.stdout.strip().splitlines()
    assert refusal.startswith("containment 'cgroup' is not available: cannot create cgroups in")
    assert "Delegate=yes" in refusal
    assert auto == "process-group"


# -- a delegated subtree, as systemd's Delegate=yes makes one --------------------------------

@pytest.fixture
def delegated(unprivileged):
    """A cgroup in every hierarchy the orchestrator uses, handed to ``nobody`` as systemd
    delegates one; removed with whatever is left in it afterwards."""
    import pwd

    support = cgroups.probe()
    assert isinstance(support, cgroups.Support), support
    entry = pwd.getpwnam("nobody")
    name = f"delegated-{os.getpid()}"
    paths = {key: os.path.join(path, name) for key, path in support.own.items()}
    for path in paths.values():
        os.mkdir(path)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        for file in ("cgroup.procs", "tasks", "cgroup.threads", "cgroup.subtree_control"):
            if os.path.exists(os.path.join(path, file)):
                os.chown(os.path.join(path, file), entry.pw_uid, entry.pw_gid)
    try:
        yield paths
    finally:
        for path in paths.values():
            for directory, _, _ in sorted(os.walk(path), key=lambda item: -len(item[0])):
                os.chmod(directory, 0o755)
                cgroups._empty(directory)
                os.rmdir(directory)


def enter_and_drop(paths: dict, script: Path) -> list[str]:
    """A command that joins the delegated cgroups as root, then becomes nobody and runs
    ``script``: the orchestrator starts inside its subtree, as a service would."""
    join = "; ".join(f"open({os.path.join(path, 'cgroup.procs')!r}, 'w').write(str(os.getpid()))"
                     for path in paths.values())
    return [sys.executable, "-c",
            f"import os, sys; {join}; os.setgroups([]); os.setgid(65534); os.setuid(65534); "
            f"os.execv(sys.executable, [sys.executable, {str(script)!r}, *sys.argv[1:]])"]


DELEGATED_SCRIPT = """
import json, sys
from loguru import logger
from orchestrator.execution.base import RunSpec
from orchestrator.execution.process import ProcessExecutor
import escape_workers as escape

if __name__ == "__main__":
    place = sys.argv[1]
    logger.enable("orchestrator")
    executor = ProcessExecutor(containment="cgroup")
    report = {"containment": executor.containment}
    def spec(function, argument, **options):
        return RunSpec(run_id="r", worker=function.__name__, function=function,
                       argument=argument, pass_argument=True, **options)
    result = executor.submit_run(spec(escape.python_daemon, (place + "/daemon.pids",
                                                             place + "/daemon.ready"))).result(60)
    report["daemon"] = result.outcome.value
    future = executor.submit_run(spec(escape.daemon_then_hang, (place + "/hang.pids",
                                                                place + "/hang.ready"),
                                      timeout_seconds=float(sys.argv[2]), kill_grace_seconds=0))
    future.started.wait(60)
    report["cgroup"] = future.cgroup
    open(place + "/cgroup", "w").write(future.cgroup)
    result = future.result(60)
    report["hang"], report["error"] = result.outcome.value, result.error
    executor.shutdown(wait=True, cancel_futures=True)
    print(json.dumps(report))
"""


def test_an_unprivileged_orchestrator_in_a_delegated_subtree(delegated, unprivileged):
    script = unprivileged / "delegated.py"
    script.write_text(DELEGATED_SCRIPT)
    done = subprocess.run(enter_and_drop(delegated, script) + [str(unprivileged), "1"],
                          capture_output=True, text=True, timeout=120, cwd=unprivileged,
                          env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"})
    assert done.returncode == 0, done.stderr
    import json
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["containment"] == "cgroup"
    kill_hierarchy = cgroups.probe().roles["kill"]
    assert report["cgroup"].startswith(delegated[kill_hierarchy] + "/orchestrator-")
    assert (report["daemon"], report["hang"]) == ("succeeded", "timed_out")
    nothing_left(unprivileged / "daemon.pids")
    nothing_left(unprivileged / "hang.pids")
    for path in delegated.values():  # the orchestrator removed what it made
        assert [entry.name for entry in os.scandir(path) if entry.is_dir()] == []


def test_a_cgroup_file_system_that_turns_unwritable_mid_run(delegated, unprivileged):
    """The run still ends as it should, nothing is left, and each error is logged once."""
    script = unprivileged / "delegated.py"
    script.write_text(DELEGATED_SCRIPT)
    process = subprocess.Popen(enter_and_drop(delegated, script) + [str(unprivileged), "4"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=unprivileged, env={**os.environ, "PYTHONPATH":
                                                      f"{REPO}{os.pathsep}{REPO / 'tests'}"})
    try:
        wait_for(lambda: (unprivileged / "hang.ready").exists()
                 and (unprivileged / "cgroup").exists(), timeout=60, message="run started")
        run_cgroup = Path((unprivileged / "cgroup").read_text())
        (run_cgroup / "cgroup.kill").chmod(0o444)   # root may still write; nobody may not
        run_cgroup.parent.chmod(0o555)              # nor remove the run's cgroup
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    import json
    report = json.loads(out.strip().splitlines()[-1])
    assert report["hang"] == "timed_out", report
    nothing_left(unprivileged / "hang.pids")
    assert err.count("cannot kill cgroup") == 1, err
    assert err.count("cannot remove cgroup") == 1, err


# -- the orchestrator and its launcher killed at once ------------------------------------------

JOBS = """
import os, sys
sys.path.insert(0, {tests!r})
import escape_workers as escape

HERE = os.path.dirname(os.path.abspath(__file__))

def leave_a_daemon_and_hang():
    escape.daemon_then_hang((HERE + "/hang.pids", HERE + "/hang.ready"))
"""


@pytest.mark.parametrize("mode", MODES)
def test_killed_with_its_launcher_then_restarted(tmp_path, mode):
    """SIGKILL to the orchestrator and its launcher at once leaves the run's daemon behind;
    with cgroups, the restart kills it and removes the dead launcher's cgroups."""
    from conftest import finish

    (tmp_path / "jobs.py").write_text(JOBS.format(tests=str(REPO / "tests")))
    (tmp_path / "jobs.toml").write_text(textwrap.dedent(f"""
        [orchestrator]
        state_path = "state.db"
        http = false
        containment = "{mode}"

        [workers.hang]
        function = "jobs:leave_a_daemon_and_hang"
        interval_seconds = 3600
        timeout_seconds = false
    """))
    pid_file = tmp_path / "hang.pids"

    def start(wrapped: bool = False):
        # The first one runs under a subreaper, as a service does under its manager:
        # what its launcher orphans comes there, not to pid 1 (see conftest.subreaper).
        command = [sys.executable, "-m", "orchestrator", "run", "jobs.toml"]
        if wrapped:
            command = [sys.executable, str(REPO / "tests" / "subreaper.py"), *command]
        return subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=open(tmp_path / "stderr.log", "ab"), text=True)

    wrapper = start(wrapped=True)
    try:
        first = psutil.Process(int(wrapper.stdout.readline()))
        wait_for(lambda: (tmp_path / "hang.ready").exists(), timeout=60, message="run started")
        wait_for(lambda: len(escape.noted(str(pid_file))) == 2, message="both noted")
        launcher = next(child for child in first.children()
                        if "_launcher.py" in " ".join(child.cmdline()))
        launcher.send_signal(signal.SIGSTOP)  # it must not see its orchestrator go
        first.kill()
        first.wait(timeout=30)
        launcher.kill()
        daemon, run_process = escape.noted(str(pid_file))
        wait_for(lambda: run_process[0] not in escape.alive(str(pid_file)), timeout=30,
                 message="the run's own process died with the launcher")
        assert escape.alive(str(pid_file)) == [daemon[0]]  # the daemon survived both
        second = start()
        try:
            wait_for(lambda: (tmp_path / "stderr.log").read_text().count(
                "orchestrator started") == 2, timeout=60, message="the second one started")
            if mode == "cgroup":
                nothing_left(pid_file)
                wait_for(lambda: not [path for path in Path("/sys/fs/cgroup").glob(
                    "*/**/orchestrator-*") if f"orchestrator-{launcher.pid}-" in path.name],
                    message="the dead launcher's cgroups removed")
            else:  # what process groups cannot do (README's table says so)
                assert escape.alive(str(pid_file)) == [daemon[0]]
                os.kill(daemon[0], signal.SIGKILL)
        finally:
            second.send_signal(signal.SIGTERM)
            assert finish(second) == 0
    finally:
        for pid in escape.alive(str(pid_file)):
            os.kill(pid, signal.SIGKILL)
        wrapper.terminate()
        wrapper.wait(timeout=30)
        wrapper.stdout.close()
    log = (tmp_path / "stderr.log").read_text()
    if mode == "cgroup":
        assert f"removed the cgroups of launcher orchestrator-{launcher.pid}-" in log


# -- reading the layout -------------------------------------------------------------------------

PURE_V2 = ("""\
25 30 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
""", "0::/system.slice/orchestrator.service\n")
HYBRID = ("""\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
""", "4:memory:/box/a\n8:pids:/\n1:cpu,cpuacct:/\n0::/\n")
CONTAINER_V1 = ("""\
40 31 0:34 /docker/abc /sys/fs/cgroup/freezer ro,relatime - cgroup cgroup ro,freezer
41 31 0:35 /docker/abc /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
""", "6:freezer:/docker/abc\n4:memory:/docker/abc/job\n")


def test_the_hierarchies_and_this_processes_cgroups_are_read_from_proc():
    assert cgroups._mounts(PURE_V2[0]) == {"unified": ("/sys/fs/cgroup", "/")}
    assert cgroups._own_paths(PURE_V2[1]) == {"unified": "/system.slice/orchestrator.service"}
    assert cgroups._mounts(HYBRID[0]) == {
        "memory": ("/sys/fs/cgroup/memory", "/"), "pids": ("/sys/fs/cgroup/pids", "/"),
        "cpu,cpuacct": ("/sys/fs/cgroup/cpu,cpuacct", "/"),
        "unified": ("/sys/fs/cgroup/unified", "/")}
    assert cgroups._own_paths(HYBRID[1]) == {"memory": "/box/a", "pids": "/",
                                             "cpu,cpuacct": "/", "unified": "/"}
    # a read-only mount cannot hold cgroups of ours; a mount of a subtree shows it at its root
    assert cgroups._mounts(CONTAINER_V1[0]) == {
        "memory": ("/sys/fs/cgroup/memory", "/docker/abc")}


def test_the_probe_says_why_not_in_one_sentence(tmp_path):
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(CONTAINER_V1[0])
    (proc / "self" / "cgroup").write_text(CONTAINER_V1[1])
    assert cgroups.probe(str(proc)) == (
        "neither a cgroup v2 hierarchy with cgroup.kill nor a v1 freezer is mounted, so a "
        "cgroup could not be killed as a whole")
    (proc / "self" / "mountinfo").write_text("")
    assert cgroups.probe(str(proc)).startswith("no cgroup file system is mounted")


def test_the_v1_freezer_kills_a_lineage_that_forks_as_it_dies(tmp_path):
    """Pure cgroup v1 (no cgroup.kill): freeze, SIGKILL every member, thaw; and cpuacct for
    CPU. This machine has the v1 hierarchies, so the path runs for real here."""
    mounts = cgroups._mounts(Path("/proc/self/mountinfo").read_text())
    own = cgroups._own_paths(Path("/proc/self/cgroup").read_text())
    keys = {name: next(key for key in mounts if name in key.split(","))
            for name in ("freezer", "memory", "cpuacct", "pids", "cpu")}
    homes = {}
    for key in set(keys.values()):
        mountpoint, root = mounts[key]
        base = os.path.join(mountpoint, os.path.relpath(own[key], root))
        homes[key] = os.path.join(os.path.normpath(base), f"orchestrator-test-{os.getpid()}")
        os.mkdir(homes[key])
    plan = cgroups.Plan(homes, {"kill": keys["freezer"], "memory": keys["memory"],
                                "cpu_usage": keys["cpuacct"], "pids": keys["pids"],
                                "cpu": keys["cpu"]}, {})
    group = cgroups.Group(plan, "run-1")
    group.create()
    name = f"hopper{os.getpid() % 100000}"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            import ctypes
            ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # the lineage's orphans stay below
            os.read(read_end, 1)  # joined before it runs anything
            escape.pid_hopper((str(tmp_path / "pids"), str(tmp_path / "ready"), name))
            escape.burn_cpu(0.3)
            (tmp_path / "burnt").touch()
            while True:  # reap the hops, until the freezer kills this one too
                try:
                    os.wait()
                except ChildProcessError:
                    signal.pause()
        finally:
            os._exit(1)
    try:
        group.add(pid)
        os.write(write_end, b".")
        wait_for(lambda: (tmp_path / "burnt").exists(), message="hopping and burnt")
        assert escape.named(name)
        group.kill()
        os.waitpid(pid, 0)
        wait_for(lambda: not group.members() and not escape.named(name), timeout=15,
                 message="the lineage gone")
        assert group.finish()[0] >= 0.25  # cpuacct: the hopper's and the burn's CPU
        group.remove()
    finally:
        cgroups.destroy(plan)
