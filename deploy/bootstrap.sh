#!/usr/bin/env bash
# Install what `make up` / `make test` need and a fresh machine may lack: uv and Java (Spark).
set -euo pipefail

if ! command -v uv >/dev/null 2>&1 && ! python3 -m uv --version >/dev/null 2>&1; then
  echo "bootstrap: installing uv from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check uv
fi

if ! command -v java >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing a Java 17 runtime for Spark (apt)"
    apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  else
    echo "bootstrap: Spark needs Java 17 or 21: install a JDK (e.g. apt-get install openjdk-17-jre-headless)" >&2
    exit 1
  fi
fi

# The dashboard's browser test drives Debian's chromium (Playwright's own browser download
# cannot be fetched on our machines).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing chromium for the dashboard's browser test (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "bootstrap: the dashboard's browser test needs chromium: apt-get install chromium" >&2
  fi
fi

# The multi-host rehearsal (tests/cluster) builds network namespaces with iproute2 and relays
# PostgreSQL into them with socat.
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v socat >/dev/null 2>&1 || missing+=(socat)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing ${missing[*]} for the multi-host rehearsal (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "bootstrap: the multi-host rehearsal needs ${missing[*]}: apt-get install ${missing[*]}" >&2
  fi
fi
