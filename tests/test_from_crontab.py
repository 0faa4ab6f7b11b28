"""from-crontab: a crontab becomes the TOML of a whole installation that loads, whose plan is
cron's own times, and a message for every line left out or changed."""

from __future__ import annotations

import getpass
import re
import subprocess
import textwrap
import tomllib
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from croniter import croniter

import pytest

from orchestrator.config import NAME_PATTERN
from orchestrator.crontab_import import Conversion, convert_crontab
from orchestrator.errors import ConfigError
from orchestrator.tomlfile import load

# Debian's stock /etc/crontab (bookworm), as installed by the cron package.
DEBIAN_CRONTAB = """\
# /etc/crontab: system-wide crontab
# Unlike any other crontab you don't have to run the `crontab'
# command to install the new version when you edit this file
# and files in /etc/cron.d. These files also have username fields,
# that none of the other crontabs do.

SHELL=/bin/sh
# You can also override PATH, but by default, newer versions inherit it from the environment
#PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin

# Example of job definition:
# .---------------- minute (0 - 59)
# |  .------------- hour (0 - 23)
# |  |  .---------- day of month (1 - 31)
# |  |  |  .------- month (1 - 12) OR jan,feb,mar,apr ...
# |  |  |  |  .---- day of week (0 - 6) (Sunday=0 or 7) OR sun,mon,tue,wed,thu,fri,sat
# |  |  |  |  |
# *  *  *  *  * user-name command to be executed
17 *\t* * *\troot\tcd / && run-parts --report /etc/cron.hourly
25 6\t* * *\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }
47 6\t* * 7\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.weekly; }
52 6\t1 * *\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.monthly; }
#
"""

DEBIAN_LINES = {"cron.hourly": "17 * * * *", "cron.daily": "25 6 * * *",
                "cron.weekly": "47 6 * * 7", "cron.monthly": "52 6 1 * *"}


def workers_of(text: str) -> dict[str, dict]:
    return tomllib.loads(text)["workers"]


def test_debian_crontab_converts_to_four_root_workers():
    conversion = convert_crontab(DEBIAN_CRONTAB, system=True, source="/etc/crontab")
    assert conversion.problems == []  # every line has its equivalent
    text = conversion.toml
    workers = workers_of(text)
    assert list(workers) == list(DEBIAN_LINES)
    for name, line in DEBIAN_LINES.items():
        worker = workers[name]
        assert worker["cron"] == line and worker["user"] == "root" and worker["shell"] is True
        assert worker["command"].endswith(f"run-parts --report /etc/{name}" +
                                          ("" if name == "cron.hourly" else "; }"))
        assert worker["timeout_seconds"] is False and worker["max_retries"] == 0
        assert "env" not in worker  # PATH is commented out in this version
    assert "# *  *  *  *  * user-name command to be executed" in text


def test_debian_crontab_plan_matches_croniter(tmp_path):
    text = convert_crontab(DEBIAN_CRONTAB, system=True).toml
    # `user` other than the current one is refused unless running as root.
    text = text.replace('user = "root"', f'user = "{getpass.getuser()}"')
    path = tmp_path / "crontab.toml"
    path.write_text(text)
    zone = ZoneInfo("Europe/Berlin")
    orch = load(path).build(timezone=zone)
    # Two weeks around the end of summer time, with a Sunday and the 1st of a month in it.
    start = datetime(2026, 10, 19, 0, 0, tzinfo=zone)
    plan = orch.plan(start, hours=14 * 24)
    for name, line in DEBIAN_LINES.items():
        reference, expected = croniter(line, start), []  # start is no due time
        due = reference.get_next(datetime)
        while due < datetime(2026, 11, 2, 0, 0, tzinfo=zone):
            expected.append(due.astimezone(timezone.utc))
            due = reference.get_next(datetime)
        got = [when.astimezone(timezone.utc) for when, worker in plan if worker == name]
        assert got == expected, name
    assert len([n for _, n in plan if n == "cron.hourly"]) == 14 * 24 + 1  # 25 October: 25 h
    assert [n for _, n in plan].count("cron.monthly") == 1


def test_user_crontab_features():
    conversion = convert_crontab(textwrap.dedent("""\
        # my jobs
        MAILTO=ops@example.org
        PATH=/usr/local/bin:/usr/bin:/bin
        GREETING = " hello "
        */5 * * * * /home/me/bin/fetch.sh --quiet >/dev/null 2>&1
        @reboot /usr/bin/redis-server --daemonize yes
        @daily /home/me/bin/report.py
        CRON_TZ=America/New_York
        0 9 * * mon-fri cd /srv/app && ./manage.py clearsessions
        0 9 * * mon-fri cd /srv/app && ./manage.py clearsessions
        61 * * * * nonsense
        @every 5m nonsense
        * * * *
        TZ=Nowhere/Land
        0 0 1 1 * echo 100\\% done
        """))
    text = conversion.toml
    workers = workers_of(text)
    assert list(workers) == ["fetch", "redis-server", "report", "manage", "manage-2", "echo"]
    assert all(NAME_PATTERN.fullmatch(name) for name in workers)
    fetch = workers["fetch"]
    assert fetch["cron"] == "*/5 * * * *" and "timezone" not in fetch
    assert fetch["command"] == "/home/me/bin/fetch.sh --quiet >/dev/null 2>&1"
    assert fetch["env"] == {"PATH": "/usr/local/bin:/usr/bin:/bin", "GREETING": " hello "}
    assert "user" not in fetch
    assert workers["redis-server"]["execution_mode"] == "triggered"
    assert workers["redis-server"]["run_at_start"] is True
    assert "cron" not in workers["redis-server"]
    assert workers["report"]["cron"] == "@daily"
    assert workers["manage"]["timezone"] == "America/New_York"
    assert workers["echo"]["command"] == "echo 100% done"
    assert workers["echo"]["timezone"] == "America/New_York"  # the bad TZ line changed nothing
    assert "# my jobs" in text
    for note in ("line 2: cannot be expressed: MAILTO=ops@example.org: no equivalent; to be "
                 "told about failures, give a worker on_failure = \"mail -s 'job failed' "
                 "ops@example.org\"",
                 "line 11: cannot be expressed: 61 * * * * nonsense: minute field '61' is out "
                 "of range 0-59",
                 "line 12: cannot be expressed: @every 5m nonsense: unknown nickname '@every'",
                 "line 13: cannot be expressed: * * * *: expected a schedule and a command",
                 "line 14: cannot be expressed: TZ=Nowhere/Land: not a known IANA time zone"):
        assert "# " + note in text
    assert conversion.problems == [
        "crontab line 2: 'MAILTO=ops@example.org': left out: no equivalent; to be told about "
        "failures, give a worker on_failure = \"mail -s 'job failed' ops@example.org\" (it "
        "gets ORCHESTRATOR_WORKER and ORCHESTRATOR_ERROR)",
        "crontab line 6: '@reboot /usr/bin/redis-server --daemonize yes': became a worker with "
        "run_at_start = true: it runs each time the orchestrator starts, not once per boot",
        "crontab line 11: '61 * * * * nonsense': left out: minute field '61' is out of range "
        "0-59",
        "crontab line 12: '@every 5m nonsense': left out: unknown nickname '@every'; did you "
        "mean @weekly? valid nicknames: @yearly @annually @monthly @weekly @daily @midnight "
        "@hourly",
        "crontab line 13: '* * * *': left out: expected a schedule and a command",
        "crontab line 14: 'TZ=Nowhere/Land': left out: not a known IANA time zone; the lines "
        "below keep the previous zone"]


def test_converted_user_crontab_loads(tmp_path):
    text = convert_crontab("PATH=/bin\n@reboot touch started\n@hourly date\n"
                           "SHELL=/bin/bash\n30 2 * * * echo $((1 + 1))\n").toml
    path = tmp_path / "from-crontab.toml"
    path.write_text(text)
    orch = load(path).build()
    assert orch.get_worker("touch").run_at_start
    assert orch.get_worker("echo").command == ("/bin/bash", "-c", "echo $((1 + 1))")
    assert orch.get_worker("date").cron == "@hourly"


def test_system_lines_carry_their_user():
    conversion = convert_crontab("*/10 * * * * www-data php /var/www/cron.php\n"
                                 "@reboot root /usr/local/bin/warm-cache\n"
                                 "0 1 * * * justauser\n", system=True, source="/etc/cron.d/x")
    text = conversion.toml
    workers = workers_of(text)
    assert workers["cron"]["user"] == "www-data"
    assert workers["cron"]["command"] == "php /var/www/cron.php"
    assert workers["warm-cache"]["user"] == "root"
    assert "# line 3: cannot be expressed: 0 1 * * * justauser: expected a schedule, a user " \
           "and a command" in text
    assert [problem.split(":", 1)[0] for problem in conversion.problems] == [
        "/etc/cron.d/x line 2", "/etc/cron.d/x line 3"]
    assert conversion.problems[1] == ("/etc/cron.d/x line 3: '0 1 * * * justauser': left out: "
                                      "expected a schedule, a user and a command")


def run_shell(command: str) -> str:
    return subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                          timeout=10, check=True).stdout


def test_percent_becomes_standard_input_as_cron_gives_it():
    line = r"0 * * * * tr a-z A-Z > /dev/stdout; echo 50\% done%first line%second line"
    conversion = convert_crontab("# percent\n" + line + "\n")
    worker = workers_of(conversion.toml)["tr"]
    assert "# the text after % goes to the command's standard input, as cron does" in \
        conversion.toml
    assert run_shell(worker["command"]) == "FIRST LINE\nSECOND LINE\n50% done\n"
    assert conversion.problems == [
        "crontab line 2: '0 * * * * tr a-z A-Z > /dev/stdout; echo 50\\% done%first line%second "
        "line': an unescaped % ends the command, as under cron: the worker runs 'tr a-z A-Z > "
        "/dev/stdout; echo 50% done' with 'first line\\nsecond line' as its standard input; "
        "write \\% where a literal % is meant"]


def test_every_percent_that_changes_a_command_is_reported():
    conversion = convert_crontab(textwrap.dedent("""\
        0 1 * * * tar czf /srv/backup-$(date +%Y-%m-%d).tgz /var/www
        0 2 * * * tar czf /srv/backup-$(date +\\%Y-\\%m-\\%d).tgz /var/www
        0 3 * * * cat; printf x%
        0 4 * * * cat; basename a\\\\%text
        """))
    workers = workers_of(conversion.toml)
    # Line 1 is cron's classic trap: kept as cron runs it (the date is cut off), and reported.
    assert workers["tar"]["command"].endswith("\ntar czf /srv/backup-$(date +")
    assert workers["tar-2"]["command"] == "tar czf /srv/backup-$(date +%Y-%m-%d).tgz /var/www"
    assert run_shell(workers["cat"]["command"]) == "x"  # an empty input, not a newline
    # In the crontab, \\ is an escaped backslash, so the % after it ends the command.
    assert workers["cat-2"]["command"].endswith("\ncat; basename a\\\\")
    assert run_shell(workers["cat-2"]["command"]) == "text\na\\\n"
    lines = [problem.split(":", 1)[0] for problem in conversion.problems]
    assert lines == ["crontab line 1", "crontab line 3", "crontab line 4"]
    assert conversion.problems[0] == (
        "crontab line 1: '0 1 * * * tar czf /srv/backup-$(date +%Y-%m-%d).tgz /var/www': an "
        "unescaped % ends the command, as under cron: the worker runs 'tar czf "
        "/srv/backup-$(date +' with 'Y-\\nm-\\nd).tgz /var/www' as its standard input; write "
        "\\% where a literal % is meant")
    assert "the worker runs 'cat; printf x' with an empty standard input" in \
        conversion.problems[1]



def test_message_line_numbers_are_the_editors():
    # Only "\n" ends a line, as for cron: not a form feed or U+2028 (str.splitlines would).
    conversion = convert_crontab("\x0c\n@daily a%\u2028b\r\n61 * * * * x\n")
    assert [problem.split(":", 1)[0] for problem in conversion.problems] == [
        "crontab line 2", "crontab line 3"]
    assert workers_of(conversion.toml)["a"]["command"].startswith("exec <<'ORCHESTRATOR_STDIN'"
                                                                  "\n\u2028b\n")

def test_names_stay_valid_and_unique_for_odd_commands():
    lines = ["* * * * * ./my script.sh", "* * * * * 'ünïcode' thing", "* * * * * >/dev/null",
             "* * * * * cd /", "* * * * * echo 'unbalanced", "* * * * * sudo -u x /opt/Job.SH",
             "* * * * * A=1 B=2 /usr/bin/env python3 -u /srv/tasks/nightly_sync.py",
             "* * * * * " + "x" * 80]
    workers = workers_of(convert_crontab("\n".join(lines) + "\n").toml)
    assert len(workers) == len(lines)
    assert all(NAME_PATTERN.fullmatch(name) and len(name) <= 40 for name in workers)
    assert "nightly_sync" in workers and "Job.SH" in workers


def test_control_characters_and_quotes_survive():
    text = convert_crontab('* * * * * printf "a\\tb" \'"q"\' \x01 # not a comment\n').toml
    (worker,) = workers_of(text).values()
    assert worker["command"] == 'printf "a\\tb" \'"q"\' \x01 # not a comment'


def test_output_always_parses():
    for crontab in ["", "\n\n", "# only a comment", "FOO=bar", "x", "@reboot",
                    "\x00 * * * * x", "* * * * * \\", '"A B"=1\n* * * * * y', "* * * * * %",
                    "0 0 * * * \x01%\x02", "61\t*\t* * *\tx", "@daily x%\u2028y"]:
        conversion = convert_crontab(crontab, source="bad\nname")
        assert isinstance(conversion, Conversion)
        document = tomllib.loads(conversion.toml)
        assert document["orchestrator"] == {"state_path": "state.db"}
        assert re.match(r"# Converted from bad name", conversion.toml)
        assert all("\n" not in problem and problem.isprintable()
                   for problem in conversion.problems)


# -- a whole installation ---------------------------------------------------------------------

def test_output_is_a_whole_installation(tmp_path):
    text = convert_crontab("0 3 * * * /usr/local/bin/backup.sh\n").toml
    tables = [line for line in text.splitlines() if line.startswith("[")]
    assert tables == ["[orchestrator]", "[workers.backup]"]
    document = tomllib.loads(text)
    assert document["orchestrator"] == {"state_path": "state.db"}
    assert "timezone" not in document["orchestrator"]  # the machine's zone
    for setting in ('# control_socket = "state.db.sock"', '# http = "127.0.0.1:8765"',
                    '# http_token_file = "token"'):
        index = text.splitlines().index(setting)
        assert text.splitlines()[index - 1].startswith("# ")  # says what it is for
    path = tmp_path / "jobs.toml"
    path.write_text(text)
    installation = load(path)
    # Relative to the file, not to the current directory: state survives a restart.
    options = installation.orchestrator_options
    assert options["state_path"] == str(tmp_path / "state.db")
    # The commented control_socket is the default (for versions that have the option).
    socket = str(tmp_path / "state.db.sock")
    assert options.get("control_socket", socket) == socket
    assert "http" not in options and "http_token" not in options
    assert [entry.name for entry in installation.workers] == ["backup"]
    orchestrator = installation.build()
    assert orchestrator.get_worker("backup").cron == "0 3 * * *"


def test_the_commented_http_settings_work_once_uncommented(tmp_path):
    text = convert_crontab("@hourly date\n").toml
    text = text.replace('# http = "127.0.0.1:8765"', 'http = "127.0.0.1:8765"')
    text = text.replace('# http_token_file = "token"', 'http_token_file = "token"')
    (tmp_path / "token").write_text("s3cret\n")
    (tmp_path / "jobs.toml").write_text(text)
    options = load(tmp_path / "jobs.toml").orchestrator_options
    assert options["http"] == "127.0.0.1:8765" and options["http_token"] == "s3cret"


def test_crontab_timezones_stay_with_their_workers():
    text = convert_crontab("CRON_TZ=Asia/Tokyo\n0 9 * * * a\nCRON_TZ=UTC\n0 9 * * * b\n").toml
    document = tomllib.loads(text)
    assert "timezone" not in document["orchestrator"]
    assert document["workers"]["a"]["timezone"] == "Asia/Tokyo"
    assert document["workers"]["b"]["timezone"] == "UTC"


def test_an_empty_mailto_is_equivalent_and_not_reported():
    conversion = convert_crontab('MAILTO=""\n@daily date\n')
    assert conversion.problems == []
    assert "# line 1: MAILTO=: cron sends no mail, nor does the orchestrator" in conversion.toml


@pytest.mark.parametrize("crontab", ["", "# only a comment\nSHELL=/bin/bash\n",
                                     "MAILTO=me\n61 * * * * x\n"])
def test_nothing_convertible_still_gives_the_orchestrator_table(tmp_path, crontab):
    conversion = convert_crontab(crontab, source="my-crontab")
    document = tomllib.loads(conversion.toml)
    assert document == {"orchestrator": {"state_path": "state.db"}}
    assert "# No line of the crontab became a worker: add a [workers.NAME] table" in \
        conversion.toml
    assert conversion.problems[-1] == (
        "my-crontab: nothing could be converted: no line became a worker, so the output is "
        "only the [orchestrator] table; add a [workers.NAME] table, since orchestrator check, "
        "plan and run refuse a file without workers")
    lines_left_out = crontab.count("MAILTO") + crontab.count("61 *")
    assert len(conversion.problems) == lines_left_out + 1
    (tmp_path / "jobs.toml").write_text(conversion.toml)
    with pytest.raises(ConfigError, match="no workers; add a table per worker"):
        load(tmp_path / "jobs.toml")
