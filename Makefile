# pushbench: `make bench` runs the default matrix and writes a report; `make test` runs the tests.
# Every target installs what it needs into .venv first, so a fresh clone needs nothing else.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/bench.toml

.PHONY: setup test test-slow test-stacks test-network haproxy bench bench-network quick lint format clean chromium \
	test-browser browser-profile conformance check-server test-distributed bench-client bench-scale

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Every transport over every TLS stack through the real HAProxy (about a minute on 2 cores).
test-stacks: $(STAMP) haproxy
	$(PY) -m pytest -m stacks -q -rs

# The TLS stacks (h1-tls, h2-tls) put Debian's HAProxy in front of the servers; without it only h1 runs.
HAPROXY ?= /usr/sbin/haproxy
haproxy:
	@test -x $(HAPROXY) || apt-get install -y haproxy || (apt-get update && apt-get install -y haproxy) \
		|| echo "warning: HAProxy could not be installed; the TLS stacks (h1-tls, h2-tls) will not run"

# The emulated network path ([network] in a config, root only): iproute2 and iptables, and for kernels without
# sch_netem the delay line's NFQUEUE binding (netfilterqueue, built against Debian's libnetfilter-queue-dev).
NETWORK_STAMP := $(VENV)/.network-installed
NETWORK_APT := iproute2 iptables libnetfilter-queue-dev gcc

$(NETWORK_STAMP): $(STAMP) pyproject.toml
	@{ command -v ip && command -v tc && command -v iptables && command -v gcc \
		&& dpkg -s libnetfilter-queue-dev; } >/dev/null 2>&1 \
		|| DEBIAN_FRONTEND=noninteractive apt-get install -y $(NETWORK_APT) \
		|| (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(NETWORK_APT)) \
		|| echo "warning: could not install $(NETWORK_APT); network cells and tests need them"
	$(PY) -m pip install --quiet -e '.[network]' && touch $(NETWORK_STAMP) \
		|| echo "warning: netfilterqueue could not be installed; rtt_ms/loss_pct cells will refuse to start"

setup: $(STAMP) haproxy $(NETWORK_STAMP)

test: $(STAMP) haproxy $(NETWORK_STAMP)
	$(PY) -m pytest -m "not slow and not browser and not conformance and not stacks and not distributed and not network" -q

# Cells over an emulated path between two network namespaces (root): about a minute on 2 cores.
test-network: $(STAMP) $(NETWORK_STAMP)
	$(PY) -m pytest -m network -q

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q

# Dask shards on a cluster of network-namespace hosts made and removed by the test (root, iproute2); about a minute.
test-distributed: $(STAMP) $(NETWORK_STAMP)
	$(PY) -m pytest -m distributed -q -rs

# Every Autobahn WebSocket case (via kosoku) against /ws?mode=echo, compression on; the report is kept in
# results/conformance-<UTC time>/ and the target fails if any case FAILED. About 6 minutes on 2 cores (12.* and 13.*, compression, take most).
conformance: $(STAMP)
	$(PY) -m pip install --quiet -e '.[conformance]'
	$(PY) -m tools.conformance

# The browser suite: Debian's Chromium (never a downloaded browser) driven by Playwright's Python package.
# Without Chromium or Playwright the suite is skipped with the reason, not passed.
BROWSER_STAMP := $(VENV)/.browser-installed
CHROMIUM ?= /usr/bin/chromium

$(BROWSER_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[browser]' && touch $(BROWSER_STAMP) \
		|| echo "warning: Playwright could not be installed; the browser suite will be skipped"

chromium:
	@test -x $(CHROMIUM) || apt-get install -y chromium || (apt-get update && apt-get install -y chromium) \
		|| echo "warning: Chromium could not be installed; the browser suite will be skipped"

test-browser: $(BROWSER_STAMP) chromium
	$(PY) -m pytest -m browser -q -rs

# Writes configs/browser_profile.json: the header bytes Chromium really sends, recorded on the wire.
# Headed Chromium on an Xvfb screen sends the desktop User-Agent; without Xvfb it records headless (and says so).
browser-profile: $(STAMP) chromium
	@command -v Xvfb >/dev/null || apt-get install -y xvfb || echo "warning: no Xvfb; recording headless Chromium"
	$(PY) -m tools.browser_profile --chromium $(CHROMIUM)

# Does the server at URL keep pushbench's endpoint contract (docs/contract.md)? make check-server URL=http://HOST:PORT
check-server: $(STAMP)
	@test -n "$(URL)" || (echo "usage: make check-server URL=http://HOST:PORT" >&2; exit 2)
	$(PY) -m servers.check $(URL)

bench: $(STAMP) haproxy
	$(PY) -m loadgen --config $(CONFIG)
	$(PY) -m analysis results/latest

# Every transport over an emulated network path (root): configs/network.toml and its report, about 6 minutes.
bench-network: $(STAMP) haproxy $(NETWORK_STAMP)
	$(PY) -m loadgen --config configs/network.toml
	$(PY) -m analysis results/latest

# How far each transport goes on this machine: configs/scale.toml (100 to 10,000 clients per transport).
bench-scale: $(STAMP) haproxy
	$(PY) -m loadgen --config configs/scale.toml
	$(PY) -m analysis results/latest

quick: $(STAMP) haproxy
	$(PY) -m loadgen --config configs/quick.toml
	$(PY) -m analysis results/latest

# The instrument's self-check: pushbench's client against Node's ws, python websockets, autocannon and wrk on one
# server, printing CPU per message / request and the ratios. npm packages go into .peers/ (never global).
PEERS := .peers/.installed

$(PEERS):
	@command -v npm >/dev/null || apt-get install -y nodejs npm || (apt-get update && apt-get install -y nodejs npm)
	npm install --no-audit --no-fund --silent --prefix .peers ws@8 autocannon@7
	touch $(PEERS)

bench-client: $(STAMP) $(PEERS)
	@command -v wrk >/dev/null || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)
	@command -v h2load >/dev/null || apt-get install -y nghttp2-client \
		|| (apt-get update && apt-get install -y nghttp2-client)
	$(PY) -m loadgen.selfcheck

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .peers .mypy_cache .ruff_cache .pytest_cache
