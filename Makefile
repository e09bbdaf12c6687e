# certkeeper: build, then install as root.
#
#   make                    # cargo build --release --locked (no `demo`, as the Debian package)
#   sudo make install       # copies what was built; it never runs cargo
#
# `install` honours DESTDIR (a staging root, for packagers) and the directory variables below.
# The defaults are the paths the examples name: the binary in /usr/bin (the units' ExecStart;
# the installed units are given $(BINDIR) instead), the hooks in /usr/share/certkeeper/hooks
# (the example configuration's dns_hook and reload), the configuration, live and state
# directories of the example configuration and the units. Another HOOKDIR, CONFDIR or STATEDIR
# must be written into the configuration (and the units' ReadWritePaths) by hand.

PREFIX   ?= /usr
BINDIR   ?= $(PREFIX)/bin
HOOKDIR  ?= /usr/share/certkeeper/hooks
DOCDIR   ?= /usr/share/doc/certkeeper
UNITDIR  ?= /lib/systemd/system
CONFDIR  ?= /etc/certkeeper
STATEDIR ?= /var/lib/certkeeper

CARGO ?= cargo
# The installed binary leaves out `certkeeper demo` and its embedded simulator, as a packager
# builds it (Cargo.toml); `make CARGOFLAGS=--locked` keeps it.
CARGOFLAGS ?= --locked --no-default-features
# The binary `install` copies: by default the one `make` built.
BIN ?= target/release/certkeeper

HOOKS = hooks/dns-rfc2136 hooks/reload-apache hooks/reload-nginx
UNITS = examples/certkeeper.service examples/certkeeper-once.service examples/certkeeper-once.timer

.PHONY: all build install

all: build

build:
	$(CARGO) build --release $(CARGOFLAGS)

# Modes are given to every file and directory, so that the umask does not decide them. The
# directories are those certkeeper accepts: owned by root and writable by nobody else
# (src/host.rs); the state directory, which holds the journals with their new keys, 0700; the
# live directory 0755 (its keys are 0600), made here because the units' ReadWritePaths must
# exist when a unit starts. An existing configuration is never overwritten.
install:
	@test -x "$(BIN)" || { echo "$(BIN) is missing: run 'make' first (or pass BIN=path)" >&2; exit 1; }
	install -d -m 0755 "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(HOOKDIR)" "$(DESTDIR)$(DOCDIR)" "$(DESTDIR)$(UNITDIR)"
	install -m 0755 "$(BIN)" "$(DESTDIR)$(BINDIR)/certkeeper"
	install -m 0755 $(HOOKS) "$(DESTDIR)$(HOOKDIR)/"
	for u in $(UNITS); do \
		sed 's|/usr/bin/certkeeper|$(BINDIR)/certkeeper|g' "$$u" > "$(DESTDIR)$(UNITDIR)/.$${u##*/}.new" && \
		chmod 0644 "$(DESTDIR)$(UNITDIR)/.$${u##*/}.new" && \
		mv -f "$(DESTDIR)$(UNITDIR)/.$${u##*/}.new" "$(DESTDIR)$(UNITDIR)/$${u##*/}" || exit 1; \
	done
	install -m 0644 README.md "$(DESTDIR)$(DOCDIR)/README.md"
	install -d -m 0755 "$(DESTDIR)$(CONFDIR)" "$(DESTDIR)$(CONFDIR)/live"
	install -d -m 0700 "$(DESTDIR)$(STATEDIR)"
	@if [ -e "$(DESTDIR)$(CONFDIR)/certkeeper.toml" ]; then \
		echo "$(DESTDIR)$(CONFDIR)/certkeeper.toml exists: left as it is (the example is examples/certkeeper.toml)"; \
	else \
		echo "install -m 0644 examples/certkeeper.toml $(DESTDIR)$(CONFDIR)/certkeeper.toml"; \
		install -m 0644 examples/certkeeper.toml "$(DESTDIR)$(CONFDIR)/certkeeper.toml"; \
	fi
