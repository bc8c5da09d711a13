"""The surge switch of web behind the edge proxy (operations/surge), on a fake engine: the order of its
steps (the new container is off the proxy's network until PostHog's readiness says ready, the old one
goes only once the proxy sees the new one), its undo on failure and Ctrl-C, and a kill at every step
followed by the next task's replay, which leaves exactly one web container: the one .env describes
when it had joined the rotation, else the old one."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from posthog_compose import journal
from posthog_compose.errors import OperatorError
from posthog_compose.operations import surge
from posthog_compose.operations.surge import containers, drain, join, ready, retire

EDGE = "posthog_edge"
STEPS = ("surge-created", "surge-started", "surge-joined", "surge-pinned", "surge-stopped")
WRITES = (1, 2, 3, 4, 5)  # the journal entry: creating, starting, joining, draining, retiring
HOSTS = "127.0.0.1\tlocalhost\n172.20.0.254\tproxy-1\n"


@dataclass
class Box:
    id: str
    number: int
    hash: str
    state: str = "created"
    networks: dict = field(default_factory=dict)  # name -> {"IPAddress": ..., "Aliases": [...]}
    answers: list = field(default_factory=list)  # what its /_readyz says, one per question, last repeats

    @property
    def name(self):
        return f"posthog-web-{self.number}"


class Killed(BaseException):
    """Stands for SIGKILL: raised at a fault point; the fake engine and the journal are then put back
    as they were at that instant (nothing after a kill happens)."""


class Engine:
    """The docker and compose commands the surge switch runs, on a model of the containers."""

    def __init__(self, root: Path, answers=("starting", "ready"), wanted="h-new"):
        self.root = root
        self.wanted = wanted
        self.answers = list(answers)
        self.boxes = {"old": Box("old", 1, "h-old", "running",
                                 {"posthog_default": {"IPAddress": "10.0.0.2", "Aliases": ["web"]},
                                  EDGE: {"IPAddress": "172.20.0.2", "Aliases": ["posthog-web-1", "web"]}})}
        self.log: list[list[str]] = []
        self.next_ip = 3
        self.proxy_saw: list[set] = []  # what the proxy resolved `web` to, each time it was asked
        self.hosts = HOSTS  # the proxy's /etc/hosts
        self.hosts_writable = True
        self.proxy_runs = True
        # container stopped while serving -> (its address, what the proxy resolved `web` to then, whether
        # another web container served then)
        self.dialled_at_stop: dict[str, tuple] = {}

    # -- the Runner interface
    def run(self, cmd, *, capture=False, check=True, input=None, mutating=True, timeout=None):
        self.log.append(list(cmd))
        rc, out = self.answer(list(cmd), input)
        if check and rc != 0:
            raise OperatorError(f"`{' '.join(cmd[:3])}` failed (exit {rc})")
        return subprocess.CompletedProcess(cmd, rc, out, "")

    def failure(self, cmd, returncode, stderr):
        return OperatorError(f"`{cmd[0]}` failed")

    # -- the model
    def resolved(self) -> set:
        """What the proxy resolves `web` to: a line of its /etc/hosts naming web, else Docker's DNS."""
        pinned = {line.split()[0] for line in self.hosts.splitlines() if "web" in line.split("#")[0].split()[1:]}
        return pinned or {b.networks[EDGE]["IPAddress"] for b in self.on_edge()}

    def on_edge(self):
        return [b for b in self.boxes.values() if b.state == "running" and EDGE in b.networks]

    def row(self, box: Box) -> dict:
        return {"Id": box.id, "Name": "/" + box.name,
                "State": {"Status": box.state, "Restarting": box.state == "restarting", "ExitCode": 0},
                "Config": {"Labels": {"com.docker.compose.service": "web", "com.docker.compose.project": "posthog",
                                      "com.docker.compose.container-number": str(box.number),
                                      containers.HASH_LABEL: box.hash}},
                "NetworkSettings": {"Networks": box.networks}}

    def answer(self, cmd, input=None):  # noqa: C901 - one branch a command
        if "--project-directory" in cmd:
            args = cmd[cmd.index("--project-directory") + 2:]
            if args[:3] == ["config", "--hash", "web"]:
                return 0, f"web {self.wanted}\n"
            if args[0] == "up" and "--scale" in args:
                number = min(set(range(1, 4)) - {b.number for b in self.boxes.values()})
                box = Box(f"new{number}", number, self.wanted, "created",
                          {"posthog_default": {"IPAddress": "", "Aliases": ["web"]},
                           EDGE: {"IPAddress": "", "Aliases": [f"posthog-web-{number}", "web"]}},
                          list(self.answers))
                self.boxes[box.id] = box
                return 0, ""
            raise AssertionError(f"unexpected compose command {args}")
        if cmd[:2] == ["docker", "ps"]:
            service = next(f.rsplit("=", 1)[1] for f in cmd if f.startswith("label=com.docker.compose.service="))
            if service == "proxy":
                return 0, "proxy\n" if self.proxy_runs else ""
            return 0, "".join(f"{b.id}\n" for b in self.boxes.values() if "--all" in cmd or b.state == "running")
        if cmd[:3] == ["docker", "inspect", "--format"]:
            box = self.boxes.get(cmd[-1])
            return (0, json.dumps(self.row(box)["State"]) + "\n") if box else (1, "")
        if cmd[:2] == ["docker", "inspect"]:
            return 0, json.dumps([self.row(self.boxes[i]) for i in cmd[2:] if i in self.boxes])
        if cmd[:3] == ["docker", "network", "disconnect"]:
            self.boxes[cmd[-1]].networks.pop(cmd[-2], None)
            return 0, ""
        if cmd[:3] == ["docker", "network", "connect"]:
            aliases = [cmd[i + 1] for i, word in enumerate(cmd) if word == "--alias"]
            self.boxes[cmd[-1]].networks[cmd[-2]] = {"IPAddress": f"172.20.0.{self.next_ip}", "Aliases": aliases}
            self.next_ip += 1
            return 0, ""
        if cmd[:2] == ["docker", "start"]:
            self.boxes[cmd[-1]].state = "running"
            return 0, ""
        if cmd[:3] == ["docker", "exec", "-i"] and cmd[3] == "proxy":
            if not self.hosts_writable:
                return 1, ""
            assert cmd[4:] in (["tee", "/etc/hosts"], ["tee", "-a", "/etc/hosts"]), cmd
            self.hosts = (self.hosts if "-a" in cmd else "") + input
            return 0, ""
        if cmd[:2] == ["docker", "exec"] and cmd[2] == "proxy":
            addresses = self.resolved()
            if cmd[3:] == ["cat", "/etc/hosts"]:
                return 0, self.hosts
            if cmd[3:] == ["test", "-w", "/etc/hosts"]:
                return (0, "") if self.hosts_writable else (1, "")
            if cmd[3] == "getent":
                self.proxy_saw.append(addresses)
                return 0, "".join(f"{a}     STREAM web\n" for a in sorted(addresses))
            if cmd[3] == "wget":
                return (0, "") if any(f"http://{a}:8000/" in cmd[-1] for a in addresses) else (1, "")
            return 1, ""
        if cmd[:2] == ["docker", "exec"]:
            box = self.boxes[cmd[2]]
            said = box.answers.pop(0) if len(box.answers) > 1 else box.answers[0]
            if said == "exit":
                box.state = "exited"
                return 1, ""
            return 0, said + "\n"
        if cmd[:2] == ["docker", "stop"]:
            box = self.boxes.get(cmd[-1])
            if box and box.state == "running" and EDGE in box.networks:
                others = [b for b in self.on_edge() if b is not box]
                self.dialled_at_stop[cmd[-1]] = (box.networks[EDGE]["IPAddress"], self.resolved(), bool(others))
            if box:
                box.state = "exited"
                for network in box.networks.values():  # a stopped container keeps its networks, not its address
                    network["IPAddress"] = ""
            return 0, ""
        if cmd[:2] == ["docker", "logs"]:
            return 0, f"Booting gunicorn stand-in for {cmd[-1]}\n"
        if cmd[:2] == ["docker", "rm"]:
            self.boxes.pop(cmd[-1], None)
            return 0, ""
        raise AssertionError(f"unexpected command {cmd}")


@pytest.fixture()
def root(tmp_path):
    (tmp_path / ".env").write_text("COMPOSE_FILE=docker-compose.yml:docker-compose.proxy.yml\n")
    return tmp_path


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(surge.ready.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(surge.join.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(surge.drain.time, "sleep", lambda seconds: None)


def serving(engine: Engine) -> list[Box]:
    return [b for b in engine.boxes.values() if b.state == "running" and EDGE in b.networks]


def consistent(engine: Engine, root: Path, drained: bool = True) -> Box:
    """Exactly one web container, running, on the proxy's network, no journal entry and no pin left;
    ``drained``: no container was told to stop while the proxy could still dial it and another served
    (not so for the undo of a join or drain that failed, nor where the proxy's /etc/hosts is read-only)."""
    assert len(engine.boxes) == 1, [b.name for b in engine.boxes.values()]
    (box,) = engine.boxes.values()
    assert box.state == "running" and EDGE in box.networks
    assert "web" in box.networks[EDGE]["Aliases"]
    assert journal.pending(root) == []
    assert engine.hosts == HOSTS  # no pin left in the proxy's /etc/hosts: Docker's DNS answers again
    for stopped, (address, dialled, others) in engine.dialled_at_stop.items() if drained else ():
        # A container is never told to stop while the proxy may still dial it and another could serve.
        assert not others or address not in dialled, (stopped, address, dialled)
    return box


# ----------------------------------------------------------------------------- the switch
def test_the_new_container_joins_only_once_ready_and_the_old_goes_only_once_the_proxy_sees_it(root):
    engine = Engine(root, answers=("starting", "status 503", "ready"))
    surge.replace_web(root, engine, timeout=60)
    box = consistent(engine, root)
    assert box.hash == "h-new" and box.name == "posthog-web-2"
    assert box.networks[EDGE]["Aliases"] == ["posthog-web-2", "web"]  # Compose's own aliases, given back
    commands = [" ".join(c[:3]) for c in engine.log]
    started = next(i for i, c in enumerate(engine.log) if c[:2] == ["docker", "start"])
    disconnected = next(i for i, c in enumerate(engine.log) if c[:3] == ["docker", "network", "disconnect"])
    asked = [i for i, c in enumerate(engine.log) if c[:3] == ["docker", "exec", "new2"]]
    connected = next(i for i, c in enumerate(engine.log) if c[:3] == ["docker", "network", "connect"])
    stopped = next(i for i, c in enumerate(engine.log) if c[:2] == ["docker", "stop"])
    assert disconnected < started < asked[0] and asked[-1] < connected < stopped, commands
    assert engine.log[stopped][-1] == "old" and engine.log[stopped][2:4] == ["--time", str(retire.GRACE)]
    assert any("172.20.0.3" in seen and "172.20.0.2" in seen for seen in engine.proxy_saw)


def test_nothing_is_replaced_when_web_already_runs_the_configuration(root, capsys):
    engine = Engine(root, wanted="h-old")
    surge.replace_web(root, engine, timeout=60)
    assert list(engine.boxes) == ["old"] and "nothing to replace" in capsys.readouterr().out


@pytest.mark.parametrize("answers, said", [
    (("starting", "exit"), "exited"),
    (("status 503",), "answers but is not ready"),
    (("starting",), "was not ready within"),
])
def test_a_new_version_that_never_turns_ready_is_removed_and_the_old_serves_on(root, monkeypatch, capsys, answers,
                                                                                said):
    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr(ready.time, "monotonic", lambda: float(next(clock)))
    engine = Engine(root, answers=answers)
    with pytest.raises(OperatorError, match=said) as raised:
        surge.replace_web(root, engine, timeout=60)
    assert "posthog-web-1 serves on unchanged" in str(raised.value) and "\n" not in str(raised.value)
    # Its logs go with the container: their last lines are shown first.
    assert "Booting gunicorn stand-in for new2" in capsys.readouterr().out
    assert consistent(engine, root).id == "old"
    assert not any(c[:3] == ["docker", "network", "connect"] for c in engine.log)


def test_ctrl_c_while_the_new_one_boots_removes_it_and_the_old_serves_on(root, monkeypatch):
    engine = Engine(root)

    def interrupted(runner, container_id):
        raise KeyboardInterrupt

    monkeypatch.setattr(ready, "ask", interrupted)
    with pytest.raises(KeyboardInterrupt):
        surge.replace_web(root, engine, timeout=60)
    assert consistent(engine, root).id == "old"


def test_a_proxy_that_never_sees_the_new_one_keeps_the_old(root, monkeypatch):
    engine = Engine(root)
    monkeypatch.setattr(join, "SEE_WITHIN", 0)
    monkeypatch.setattr(join, "resolved", lambda output: set())
    with pytest.raises(OperatorError, match="the proxy does not see the new web container"):
        surge.replace_web(root, engine, timeout=60)
    assert consistent(engine, root, drained=False).id == "old"


def test_unavailable_reason_says_why_in_a_few_words(root, monkeypatch):
    engine = Engine(root)
    monkeypatch.setattr(surge, "Runner", lambda root: engine)
    assert surge.unavailable_reason(root) is None
    engine.proxy_runs = False  # the surge would wait for a proxy that never sees the new web
    assert surge.unavailable_reason(root) == "the proxy does not run"
    engine.proxy_runs = True
    # The edge turned on in .env, not applied yet: beside.preflight would refuse, and every `up` with it
    del engine.boxes["old"].networks[EDGE]
    assert surge.unavailable_reason(root) == "web is not on the proxy's network yet"
    with pytest.raises(OperatorError, match="is not on the proxy's network"):
        surge.replace_web(root, engine, timeout=60)
    engine.boxes["old"].state = "exited"
    assert surge.unavailable_reason(root) == "web is not running"
    (root / ".env").write_text("WEB_PORT=8080\n")
    assert surge.unavailable_reason(root) == "the edge proxy is off"


# ----------------------------------------------------------------------------- the drain (drain.py)
class Clock:
    """time for drain.py: sleeping moves it on; the engine notes when the pin was written and the old
    container stopped."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += max(seconds, 0.0)


def test_the_old_container_is_stopped_only_once_the_proxy_dials_the_new_one_alone_and_the_pin_goes_after(
        root, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(drain, "time", clock)
    engine = Engine(root)
    moments = {}
    answer = engine.answer

    def timed(cmd, input=None):
        if cmd[:3] == ["docker", "exec", "-i"] and drain.MARK in (input or ""):
            moments["pinned"] = clock.now
        if cmd[:2] == ["docker", "stop"] and cmd[-1] == "old":
            moments["stopped"] = clock.now
            moments["hosts at stop"] = engine.hosts
        return answer(cmd, input)

    engine.answer = timed
    assert surge.replace_web(root, engine, timeout=60) is True
    consistent(engine, root)  # the pin is gone again afterwards
    assert engine.dialled_at_stop["old"] == ("172.20.0.2", {"172.20.0.3"}, True)
    assert moments["hosts at stop"] == HOSTS + f"172.20.0.3\tweb\t{drain.MARK}\n"  # appended, the rest untouched
    # Go re-reads /etc/hosts at most every 5 s: the old one is told to stop only after that and a margin.
    assert moments["stopped"] - moments["pinned"] >= drain.HOSTS_CACHE_AGE + drain.MARGIN


def test_the_switch_says_replaced_beside_only_when_it_replaced_and_nothing_to_replace_otherwise(root, monkeypatch,
                                                                                                capsys):
    """The rollback of a version whose new container never served: web already runs .env's version."""
    from posthog_compose.operations.upgrade import surge_gate, switch

    monkeypatch.setattr(surge, "unavailable_reason", lambda root: None)
    monkeypatch.setattr(surge_gate, "surge_refusal", lambda root, current, target: None)
    journal.write(root, "upgrade", {"from": "v1", "to": "v2", "phase": "rolling back"})
    engine = Engine(root, wanted="h-old")
    assert switch._replace_web_by_surge(root, engine, 60) is True
    out = capsys.readouterr().out
    assert "nothing to replace" in out and "replaced beside" not in out
    engine.wanted = "h-new"
    switch._replace_web_by_surge(root, engine, 60)
    out = capsys.readouterr().out
    assert "web: replaced beside the running container behind the edge proxy" in out and "nothing" not in out


def test_a_pin_left_in_the_proxy_is_drift_the_next_switch_takes_out(root, capsys):
    engine = Engine(root)
    engine.hosts = HOSTS + f"172.20.0.9\tweb\t{drain.MARK}\n"
    surge.replace_web(root, engine, timeout=60)
    consistent(engine, root)
    assert "still pinned web to 172.20.0.9" in capsys.readouterr().out


def test_a_recovery_takes_a_pin_out_whatever_the_phase(root):
    engine = Engine(root)
    engine.hosts = HOSTS + f"172.20.0.9\tweb\t{drain.MARK}\n"
    journal.write(root, "surge", {"old": "old", "old_name": "posthog-web-1", "new": None, "phase": "creating"})
    surge.recover(root, engine)
    assert consistent(engine, root).id == "old"


def test_a_proxy_whose_hosts_file_cannot_be_written_gets_web_replaced_undrained_and_says_so(root, capsys):
    engine = Engine(root)
    engine.hosts_writable = False
    surge.replace_web(root, engine, timeout=60)
    assert consistent(engine, root, drained=False).id == "new2"
    out = capsys.readouterr().out
    assert "warning: web is replaced without draining the old container" in out
    assert "no request fails" not in out  # undrained, the claim is not made


def test_a_drained_switch_says_that_no_request_fails(root, capsys):
    surge.replace_web(root, Engine(root), timeout=60)
    out = capsys.readouterr().out
    assert "beside it behind the edge proxy (no request fails) ..." in out
    assert "behind the edge proxy (no request fails): posthog-web-2 serves." in out


def test_a_proxy_that_does_not_read_its_hosts_file_first_keeps_the_old_one(root, monkeypatch):
    """A resolver asking DNS before /etc/hosts never resolves web to the new container alone: the new one
    goes, the pin too, and the old one serves on."""
    engine = Engine(root)
    monkeypatch.setattr(drain, "SEE_WITHIN", 0)
    monkeypatch.setattr(engine, "resolved", lambda: {b.networks[EDGE]["IPAddress"] for b in engine.on_edge()})
    with pytest.raises(OperatorError, match="still resolves web to 172.20.0.2, 172.20.0.3, not to 172.20.0.3 alone"):
        surge.replace_web(root, engine, timeout=60)
    assert consistent(engine, root, drained=False).id == "old"


@settings(max_examples=300, deadline=None)
@given(address=st.one_of(st.text(max_size=40), st.ip_addresses(v=4).map(str), st.ip_addresses(v=4).flatmap(
    lambda a: st.sampled_from([f"{a}\n1.2.3.4 web", f"{a}; reboot", f"$({a})", f" {a} ", f"{a} evil", f"{a}`id`"]))))
def test_the_pin_line_is_data_one_line_naming_an_ipv4_address_or_refused(address):
    import ipaddress

    try:
        line = drain.pin_line(address)
    except OperatorError as exc:
        assert "\n" not in exc.message and "not an IPv4 address" in exc.message
        return
    fields = line.split()
    assert line.count("\n") == 1 and line.endswith("\n")
    assert str(ipaddress.IPv4Address(fields[0])) == fields[0] and fields[1] == "web"
    assert drain.pinned(line) == [fields[0]]


def test_a_hostile_address_from_the_engine_is_never_written_and_never_reaches_a_shell(root, monkeypatch):
    engine = Engine(root)
    monkeypatch.setattr(join, "connect", lambda root, runner, new, aliases: "172.20.0.3\n1.2.3.4 web; $(reboot)")
    monkeypatch.setattr(join, "proxy_sees", lambda root, runner, address: None)
    with pytest.raises(OperatorError, match="not an IPv4 address"):
        surge.replace_web(root, engine, timeout=60)
    assert engine.hosts == HOSTS
    # Every write to the proxy is a fixed command, no shell; text only ever goes on stdin.
    assert all(c[4:] in (["tee", "/etc/hosts"], ["tee", "-a", "/etc/hosts"])
               for c in engine.log if c[:3] == ["docker", "exec", "-i"])
    assert consistent(engine, root).id == "old"


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30),
    st.ip_addresses(v=4).map(lambda a: f"{a}\tweb\t{drain.MARK}"),
    st.ip_addresses(v=4).map(lambda a: f"{a} web"),
    st.just("# a comment"), st.just("")), max_size=8), end=st.sampled_from(["", "\n", "\r\n"]),
    address=st.ip_addresses(v=4).map(str))
def test_any_hosts_file_keeps_its_own_lines_byte_for_byte_and_holds_at_most_one_pin(lines, end, address):
    text = "\n".join(lines) + end
    base = drain.without_pins(text)
    assert drain.pinned(base) == []
    assert [line for line in drain.lines_of(text) if drain.MARK not in line] == drain.lines_of(base)
    with_pin = (base if not base or base.endswith("\n") else base + "\n") + drain.pin_line(address)
    assert drain.pinned(with_pin) == [address]
    assert drain.without_pins(with_pin).rstrip("\n") == base.rstrip("\n")


# ----------------------------------------------------------------------------- a kill at every step
def kill_at(monkeypatch, root: Path, engine: Engine, step: str, after_write: int | None = None):
    """A kill at fault point ``step`` (or right after the journal's ``after_write``-th write): the
    engine and the journal are frozen as they were at that instant."""
    frozen = {}
    writes = []
    real_write, real_clear = journal.write, journal.clear

    def freeze():
        import copy

        path = journal.journal_path(root, "surge")
        frozen["boxes"] = copy.deepcopy(engine.boxes)
        frozen["journal"] = path.read_text() if path.exists() else None
        raise Killed(step)

    def fault_point(name):
        if name == step:
            freeze()

    def write(r, kind, entry):
        real_write(r, kind, entry)
        writes.append(kind)
        if after_write is not None and len(writes) == after_write:
            freeze()

    monkeypatch.setattr(journal, "fault_point", fault_point)
    monkeypatch.setattr(journal, "write", write)
    try:
        surge.replace_web(root, engine, timeout=60)
    except Killed:
        engine.boxes = frozen["boxes"]
        path = journal.journal_path(root, "surge")
        if frozen["journal"] is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(frozen["journal"])
        monkeypatch.setattr(journal, "fault_point", lambda name: None)
        monkeypatch.setattr(journal, "write", real_write)
        monkeypatch.setattr(journal, "clear", real_clear)
        return True
    return False


@pytest.mark.parametrize("step", STEPS)
def test_a_kill_at_each_step_is_finished_by_the_next_task(root, monkeypatch, step):
    engine = Engine(root)
    assert kill_at(monkeypatch, root, engine, step)
    assert journal.pending(root) == ["surge"]
    journal.replay(root, engine)
    box = consistent(engine, root)
    # Joined the rotation and the one .env describes: kept; otherwise the old one serves on.
    assert box.id == ("new2" if step in ("surge-joined", "surge-pinned", "surge-stopped") else "old")


@pytest.mark.parametrize("write", WRITES)
def test_a_kill_right_after_each_journal_write_is_finished_by_the_next_task(root, monkeypatch, write):
    engine = Engine(root)
    assert kill_at(monkeypatch, root, engine, "", after_write=write)
    journal.replay(root, engine)
    consistent(engine, root)


def test_after_a_kill_the_old_one_is_kept_when_env_went_back_to_it(root, monkeypatch):
    """An upgrade killed mid-switch: its replay puts .env back, so the old container is the one kept."""
    engine = Engine(root)
    assert kill_at(monkeypatch, root, engine, "surge-joined")
    engine.wanted = "h-old"
    surge.recover(root, engine)
    assert consistent(engine, root).id == "old"


def test_after_a_kill_once_the_old_one_stopped_the_serving_new_one_is_kept_even_if_env_went_back(root, monkeypatch):
    """Found by the property below: keeping the stopped old container would leave no web serving."""
    engine = Engine(root)
    assert kill_at(monkeypatch, root, engine, "surge-stopped")
    engine.wanted = "h-old"
    surge.recover(root, engine)
    assert consistent(engine, root).id == "new2"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answers=st.lists(st.sampled_from(["starting", "status 503", "ready", "exit"]), min_size=1, max_size=6),
       step=st.sampled_from(("",) + STEPS), write=st.sampled_from((None,) + WRITES),
       env_back=st.booleans())
def test_any_answers_and_any_kill_leave_one_web_container_serving(tmp_path_factory, answers, step, write, env_back):
    root = tmp_path_factory.mktemp("deployment")
    (root / ".env").write_text("COMPOSE_FILE=docker-compose.yml:docker-compose.proxy.yml\n")
    engine = Engine(root, answers=answers)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(surge.ready.time, "sleep", lambda seconds: None)
        clock = iter(range(0, 100_000, 3))
        monkeypatch.setattr(ready.time, "monotonic", lambda: float(next(clock)))
        try:
            killed = kill_at(monkeypatch, root, engine, step, after_write=write)
        except OperatorError:
            killed = False
        if killed:
            if env_back:
                engine.wanted = "h-old"
            journal.replay(root, engine)
    box = consistent(engine, root)
    assert box.hash in ("h-old", "h-new")
    if box.hash == "h-new":
        assert "ready" in answers  # only a container that turned ready ever serves


# ----------------------------------------------------------------------------- what is read from the engine
@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.one_of(
    st.none(), st.integers(), st.text(max_size=5),
    st.fixed_dictionaries({}, optional={
        "Id": st.one_of(st.text(max_size=8), st.integers(), st.none()),
        "Name": st.one_of(st.text(max_size=8), st.none()),
        "State": st.one_of(st.none(), st.fixed_dictionaries({}, optional={
            "Status": st.one_of(st.text(max_size=8), st.none()), "Restarting": st.booleans()})),
        "Config": st.one_of(st.none(), st.fixed_dictionaries({}, optional={"Labels": st.one_of(st.none(), st.dictionaries(
            st.sampled_from(["com.docker.compose.service", "com.docker.compose.oneoff", containers.HASH_LABEL,
                             "com.docker.compose.container-number"]),
            st.sampled_from(["web", "worker", "True", "False", "2", "x", ""])))})),
        "NetworkSettings": st.one_of(st.none(), st.fixed_dictionaries({}, optional={"Networks": st.one_of(
            st.none(), st.dictionaries(st.sampled_from([EDGE, "posthog_default"]), st.fixed_dictionaries({}, optional={
                "IPAddress": st.one_of(st.none(), st.text(max_size=9)),
                "Aliases": st.one_of(st.none(), st.lists(st.text(max_size=6), max_size=3))}), max_size=2))})),
    })), max_size=5))
def test_any_inspect_output_gives_web_containers_or_none_and_never_a_traceback(rows):
    for found in containers.parse_inspect(rows, EDGE):
        assert isinstance(found.number, int) and isinstance(found.edge_aliases, tuple)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.one_of(st.text(max_size=30), st.ip_addresses(v=4).map(lambda a: f"{a}   STREAM web"),
                                st.ip_addresses(v=4).map(lambda a: f"Address: {a}"), st.just("Name:\tweb")),
                      max_size=8))
def test_any_lookup_output_gives_addresses_it_holds_only(lines):
    output = "\n".join(lines)
    for address in join.resolved(output):
        assert address in output


# ----------------------------------------------------------------------------- a pin no switch is making
def test_a_leftover_pin_is_read_only_and_stale_once_no_web_container_has_its_address(root):
    engine = Engine(root)
    assert drain.leftover(root, engine) is None  # nothing pinned
    engine.hosts = HOSTS + f"172.20.0.2\tweb\t{drain.MARK}\n"  # the serving container's own address
    found = drain.leftover(root, engine)
    assert found == drain.Leftover(("172.20.0.2",), stale=False) and "web's address now" in found.line()
    engine.hosts = HOSTS + f"172.20.0.9\tweb\t{drain.MARK}\n"  # a container that is gone
    found = drain.leftover(root, engine)
    assert found.stale and "every request through the proxy fails; `invoke up` takes the pin out" in found.line()
    assert not any(cmd[:3] == ["docker", "exec", "-i"] for cmd in engine.log)  # nothing written
    engine.boxes["old"].state = "exited"  # no web runs: any pin sends the proxy nowhere
    assert drain.leftover(root, engine).stale is True
    assert all(len(line) <= 160 for line in (found.line(), drain.Leftover(("172.20.0.2",), False).line()))


def test_a_leftover_pin_that_cannot_be_read_is_no_finding(root):
    engine = Engine(root)
    engine.answer = lambda cmd, input=None: ((1, "") if cmd[:2] == ["docker", "exec"] else Engine.answer(engine, cmd,
                                                                                                             input))
    assert drain.leftover(root, engine) is None


def test_up_takes_a_leftover_pin_out_and_says_so_in_one_line(root, capsys):
    engine = Engine(root)
    engine.hosts = HOSTS + f"172.20.0.9\tweb\t{drain.MARK}\n"
    drain.take_out_leftover(root, engine)
    assert engine.hosts == HOSTS and engine.resolved() == {"172.20.0.2"}
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "still pinned web to 172.20.0.9" in out and "taking that out" in out
    drain.take_out_leftover(root, engine)  # nothing left: nothing written, nothing said
    assert capsys.readouterr().out == "" and engine.hosts == HOSTS


def test_a_drain_that_fails_and_a_pin_that_cannot_be_taken_out_leave_the_journal_for_the_next_task(root, monkeypatch):
    engine = Engine(root)

    def settle_fails(*args, **kwargs):
        engine.hosts_writable = False  # the pin went in; from now on the file cannot be written
        raise OperatorError("the proxy still resolves web to 172.20.0.2, 172.20.0.3")

    monkeypatch.setattr(drain, "settle", settle_fails)
    with pytest.raises(OperatorError, match="web was not replaced: the proxy still resolves web") as caught:
        surge.replace_web(root, engine, timeout=60)
    assert "posthog-web-2 serves beside posthog-web-1 until `invoke up` finishes the switch" in str(caught.value)
    # The pinned container keeps serving: the proxy dials it alone, so retiring it would fail every request.
    assert engine.boxes["new2"].state == "running" and engine.resolved() == {"172.20.0.3"}
    assert journal.pending(root) == ["surge"] and drain.MARK in engine.hosts  # the pin is recorded, not lost
    engine.hosts_writable = True
    monkeypatch.setattr(drain, "settle", lambda *args, **kwargs: None)  # the proxy's resolver follows again
    surge.recover(root, engine)
    assert consistent(engine, root).id == "new2"  # joined and what .env describes: kept, the old one drained


def test_a_leftover_pin_that_cannot_be_taken_out_is_a_warning_and_up_goes_on(root, capsys):
    engine = Engine(root)
    engine.hosts = HOSTS + f"172.20.0.9\tweb\t{drain.MARK}\n"
    engine.hosts_writable = False
    drain.take_out_leftover(root, engine)  # never raises: starting the deployment comes first
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == ("warning: the proxy's /etc/hosts cannot be written (no output); `invoke compose -- "
                                    "up --detach --force-recreate proxy` gives the proxy a fresh one (a pin of web left "
                                    "in it stays until then).")
    (root / ".env").write_text("WEB_PORT=8080\n")  # the edge proxy off: the proxy's file is not even read
    engine.log.clear()
    drain.take_out_leftover(root, engine)
    assert engine.log == []
