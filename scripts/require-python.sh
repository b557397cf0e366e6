# Sourced by scripts/test and scripts/demo: refuse, in one line and before anything is
# installed, a Python older than pyproject.toml's requires-python (>=3.11, the version CI tests).
require_python() {  # $1: the script's name; checks .venv/bin/python when it exists, else python3
    local python=python3 version major minor
    [ -x .venv/bin/python ] && python=.venv/bin/python
    version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || version=""
    IFS=. read -r major minor <<<"$version"
    if [ -z "$version" ] || [ "${major:-0}" -lt 3 ] || { [ "$major" -eq 3 ] && [ "${minor:-0}" -lt 11 ]; }; then
        echo "$1: Python 3.11 or newer is needed; $python is ${version:+Python }${version:-missing or not runnable}" >&2
        exit 1
    fi
}
