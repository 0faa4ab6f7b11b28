"""from-crontab: a crontab becomes TOML that loads, and whose plan is cron's own times."""

from __future__ import annotations

import getpass
import re
import subprocess
import textwrap
import tomllib
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from croniter import croniter

from orchestrator.config import NAME_PATTERN
from orchestrator.crontab_import import convert_crontab
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
    text = convert_crontab(DEBIAN_CRONTAB, system=True, source="/etc/crontab")
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
    text = convert_crontab(DEBIAN_CRONTAB, system=True)
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
    text = convert_crontab(textwrap.dedent("""\
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


def test_converted_user_crontab_loads(tmp_path):
    text = convert_crontab("PATH=/bin\n@reboot touch started\n@hourly date\n"
                           "SHELL=/bin/bash\n30 2 * * * echo $((1 + 1))\n")
    path = tmp_path / "from-crontab.toml"
    path.write_text(text)
    orch = load(path).build()
    assert orch.get_worker("touch").run_at_start
    assert orch.get_worker("echo").command == ("/bin/bash", "-c", "echo $((1 + 1))")
    assert orch.get_worker("date").cron == "@hourly"


def test_system_lines_carry_their_user():
    text = convert_crontab("*/10 * * * * www-data php /var/www/cron.php\n"
                           "@reboot root /usr/local/bin/warm-cache\n"
                           "0 1 * * * justauser\n", system=True)
    workers = workers_of(text)
    assert workers["cron"]["user"] == "www-data"
    assert workers["cron"]["command"] == "php /var/www/cron.php"
    assert workers["warm-cache"]["user"] == "root"
    assert "# line 3: cannot be expressed: 0 1 * * * justauser: expected a schedule, a user " \
           "and a command" in text


def test_percent_becomes_standard_input_as_cron_gives_it():
    line = r"0 * * * * tr a-z A-Z > /dev/stdout; echo 50\% done%first line%second line"
    worker = workers_of(convert_crontab(line + "\n"))["tr"]
    assert "# the text after % goes to the command's standard input, as cron does" in \
        convert_crontab(line + "\n")
    result = subprocess.run(["/bin/sh", "-c", worker["command"]], capture_output=True,
                            text=True, timeout=10, check=True)
    assert result.stdout == "FIRST LINE\nSECOND LINE\n50% done\n"


def test_names_stay_valid_and_unique_for_odd_commands():
    lines = ["* * * * * ./my script.sh", "* * * * * 'ünïcode' thing", "* * * * * >/dev/null",
             "* * * * * cd /", "* * * * * echo 'unbalanced", "* * * * * sudo -u x /opt/Job.SH",
             "* * * * * A=1 B=2 /usr/bin/env python3 -u /srv/tasks/nightly_sync.py",
             "* * * * * " + "x" * 80]
    workers = workers_of(convert_crontab("\n".join(lines) + "\n"))
    assert len(workers) == len(lines)
    assert all(NAME_PATTERN.fullmatch(name) and len(name) <= 40 for name in workers)
    assert "nightly_sync" in workers and "Job.SH" in workers


def test_control_characters_and_quotes_survive():
    text = convert_crontab('* * * * * printf "a\\tb" \'"q"\' \x01 # not a comment\n')
    (worker,) = workers_of(text).values()
    assert worker["command"] == 'printf "a\\tb" \'"q"\' \x01 # not a comment'


def test_output_always_parses():
    for crontab in ["", "\n\n", "# only a comment", "FOO=bar", "x", "@reboot",
                    "\x00 * * * * x", "* * * * * \\", '"A B"=1\n* * * * * y']:
        assert isinstance(tomllib.loads(convert_crontab(crontab)), dict)
        assert re.match(r"# Converted from crontab", convert_crontab(crontab))
