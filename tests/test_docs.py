"""The documentation stays true: every command the README and docs/ quote in a shell block parses with
the tool it names, every relative link resolves, the code map names exactly the modules in src/, and
the README stays a front page.

Commands are read from fenced blocks labelled bash, sh, shell or console (console: lines after `$ `)
and from unlabelled blocks; `text` and `yaml` blocks are not commands."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from workflow_runs import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Pages whose links are checked too (their commands are the benchmarks' and the config keys' own).
LINKED_PAGES = [*PAGES, REPO / "config" / "README.md", REPO / "benchmarks" / "README.md"]
README_MAX_LINES = 300
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}
# Files a page tells the reader to write themselves (README, "Your own data").
USER_FILES = {"my_study.yaml"}
CODE_MAP_MARK = "<!-- code map: keep in step with src/ (tests/test_docs.py) -->"
# While the restructuring of issue 26 lands branch by branch, the code map may name modules that do
# not exist yet (PLANNED) and leave out modules that are being replaced (REPLACED). Each entry must
# go once it is true of src/: the test fails on an entry that is no longer needed.
PLANNED: set[str] = set()
REPLACED: set[str] = set()


def fenced_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, body, line number of the opening fence) of every fenced block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = re.match(r"^(`{3,})\s*([\w+-]*)", lines[i])
        if opening:
            fence, language, start, body = opening.group(1), opening.group(2).lower(), i + 1, []
            i += 1
            while i < len(lines) and not lines[i].startswith(fence):
                body.append(lines[i])
                i += 1
            blocks.append((language, "\n".join(body), start))
        i += 1
    return blocks


def shell_commands(page: Path) -> list[tuple[str, list[str]]]:
    """(where, argv) of every simple command in the page's shell blocks: continuation lines joined,
    comments dropped, `&&`/`;`/`|` split, leading VAR=value assignments removed, <placeholders> kept
    as one word and a lone `...` (more of the same) dropped."""
    found = []
    for language, body, start in fenced_blocks(page.read_text()):
        if language not in SHELL_LANGUAGES:
            continue
        lines = body.replace("\\\n", " ").splitlines()
        if language == "console":
            lines = [line[2:] for line in lines if line.startswith("$ ")]
        for line in lines:
            line = re.sub(r"<[^<>]*>", "PLACEHOLDER", line)
            words = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            words.whitespace_split = True
            command: list[str] = []
            for word in [*words, ";"]:
                if word in {";", "&&", "||", "|", "&"}:
                    while command and re.fullmatch(r"[A-Za-z_]\w*=\S*", command[0]):
                        command.pop(0)
                    if command:
                        found.append((f"{page.relative_to(REPO)}:{start} `{' '.join(command)}`", command))
                    command = []
                elif word != "...":
                    command.append(word)
    return found


def commands_of(tool: str) -> list[tuple[str, list[str]]]:
    return [(where, argv) for page in PAGES for where, argv in shell_commands(page) if argv[0] == tool]


def subcommands() -> dict:
    import argparse

    from plmexit.cli import build_parser

    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return parser, action.choices


def parse_error(parser, argv: list[str]) -> str | None:
    """argparse's own message when argv does not parse, else None."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit as exit:
            if exit.code:
                return stderr.getvalue().strip().splitlines()[-1]
    return None


def test_the_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move a topic to docs/ (at most {README_MAX_LINES})"


def test_every_page_has_shell_commands_to_check():
    # Guards the parser above: if it stopped finding commands, every command test would pass vacuously.
    assert len(commands_of("plmexit")) >= 8 and len(commands_of("snakemake")) >= 8


def test_every_plmexit_command_parses_with_the_cli():
    parser, choices = subcommands()
    for where, argv in commands_of("plmexit"):
        assert len(argv) > 1 and argv[1] in choices, f"{where}: {argv[1:2]} is not a plmexit command ({', '.join(choices)})"
        flags = {option for action in choices[argv[1]]._actions for option in action.option_strings}
        for word in argv[2:]:
            flag = word.split("=")[0]
            assert not flag.startswith("--") or flag in flags, f"{where}: plmexit {argv[1]} has no option {flag}"
        error = parse_error(parser, argv[1:])
        assert error is None, f"{where}: {error}"


def rule_names() -> set[str]:
    sources = [REPO / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")]
    return {m.group(1) for path in sources for m in re.finditer(r"^(?:local)?(?:rule|checkpoint)\s+(\w+)\s*:", path.read_text(), re.M)}


def output_patterns() -> list[re.Pattern]:
    """Every `<results>/...` path the rules name, as a regular expression over paths under results/."""
    patterns = []
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        for literal in re.findall(r"[\"'](<results>/[^\"']+)[\"']", path.read_text()):
            parts = re.split(r"(\{\{?\w+\}?\})", literal.replace("<results>", "results"))
            patterns.append(re.compile("".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)))
    return patterns


def test_every_snakemake_command_names_configs_profiles_rules_and_targets_that_exist():
    from snakemake.cli import get_argument_parser

    parser, rules, outputs = get_argument_parser(), rule_names(), output_patterns()
    for where, argv in commands_of("snakemake"):
        error = parse_error(parser, argv[1:])
        assert error is None, f"{where}: {error}"
        args = parser.parse_args(argv[1:])
        for config in args.configfile or []:
            assert (REPO / config).is_file() or str(config) in USER_FILES, f"{where}: no config file {config}"
        for profile in args.profile or []:
            directory = REPO / profile if "/" in profile else REPO / "profiles" / profile
            assert (directory / "config.yaml").is_file(), f"{where}: no profile {profile} (profiles/{profile}/config.yaml)"
        for rule in [*(args.until or []), *(args.forcerun or []), *(args.omit_from or [])]:
            assert rule in rules, f"{where}: no rule {rule}"
        for target in args.targets or []:
            assert target in rules or any(p.fullmatch(target.rstrip("/")) for p in outputs), f"{where}: {target} is neither a rule nor an output of one"


def test_every_python_command_names_a_script_and_flags_that_exist():
    commands = [(where, argv) for tool in ("python", "python3") for where, argv in commands_of(tool)]
    assert any(argv[1:2] == ["benchmarks/embed_peers.py"] for _, argv in commands)
    for where, argv in commands:
        if argv[1:3] == ["-m", "venv"]:
            continue
        if argv[1:3] == ["-m", "pytest"]:
            for word in argv[3:]:
                if not word.startswith("-") and ("/" in word or word.endswith(".py")):
                    assert (REPO / word.split("::")[0]).exists(), f"{where}: no test {word}"
            continue
        script = REPO / argv[1]
        assert script.is_file(), f"{where}: no script {argv[1]}"
        source = script.read_text()
        for flag in (word.split("=")[0] for word in argv[2:] if word.startswith("--")):
            assert f'"{flag}"' in source, f"{where}: {argv[1]} has no option {flag}"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but - and _ dropped, spaces to -."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    outside_code = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", outside_code, re.M)}


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.relative_to(REPO)}: link {link} points to nothing"
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target), f"{page.relative_to(REPO)}: link {link}: {target.relative_to(REPO)} has no heading #{anchor}"


def test_the_docs_pages_are_linked_from_the_readme():
    readme = (REPO / "README.md").read_text()
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"


def code_map() -> list[str]:
    """The paths of src/plmexit the development page's code map names, relative to src/plmexit."""
    text = (REPO / "docs" / "development.md").read_text()
    assert CODE_MAP_MARK in text
    (_, body, _) = fenced_blocks(text[text.index(CODE_MAP_MARK):])[0]
    paths, stack, inside = [], [], False
    for line in body.splitlines():
        name = line.split()[0] if line.strip() else ""
        depth = (len(line) - len(line.lstrip(" "))) // 2
        if depth == 0:
            inside = name == "src/plmexit/"
            continue
        if inside:
            del stack[depth - 1:]
            if name.endswith("/"):
                stack.append(name)
            else:
                paths.append("".join(stack) + name)
    return paths


def test_the_code_map_names_exactly_the_modules_in_src():
    package = REPO / "src" / "plmexit"
    modules = {str(p.relative_to(package)) for p in package.rglob("*.py") if p.name != "__init__.py" or p.parent.name == "cli"}
    mapped = code_map()
    assert len(mapped) == len(set(mapped)), "the code map names a module twice"
    missing = sorted(modules - set(mapped) - REPLACED)
    assert not missing, f"docs/development.md's code map does not name {missing}"
    absent = sorted(set(mapped) - modules - PLANNED)
    assert not absent, f"docs/development.md's code map names {absent}, which src/ does not have"
    assert not PLANNED & modules, f"remove {sorted(PLANNED & modules)} from PLANNED: they exist now"
    assert not REPLACED - modules, f"remove {sorted(REPLACED - modules)} from REPLACED: they are gone"


def test_the_code_maps_other_entries_exist():
    text = (REPO / "docs" / "development.md").read_text()
    (_, body, _) = fenced_blocks(text[text.index(CODE_MAP_MARK):])[0]
    for line in body.splitlines():
        if line.strip() and not line.startswith(" ") and not line.startswith("src/"):
            entry = line.split()[0]
            assert list(REPO.glob(entry.rstrip("/"))) or entry == "results/", f"the code map names {entry}, which the repository does not have"


def test_the_command_table_names_every_command_once():
    _, choices = subcommands()
    text = (REPO / "docs" / "development.md").read_text()
    section = text[text.index("## The command line"):]
    section = section[: section.index("\n## ", 1)]
    rows = [line.split("|")[2] for line in section.splitlines() if line.startswith("| ") and "`" in line]
    named = [name for row in rows for name in re.findall(r"`([\w-]+)`", row)]
    assert sorted(named) == sorted(choices), f"docs/development.md's command table: {sorted(set(choices) ^ set(named))}"
