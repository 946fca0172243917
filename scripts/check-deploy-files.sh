#!/usr/bin/env bash
# Checks the deployment files: systemd/mcp-agent.service and nix/module.nix.
#  1. the flags and MCP_AGENT_* variables they use exist in `mcp-agent serve --help`;
#  2. `systemd-analyze verify` of the plain unit, with ExecStart pointed at the
#     built binary (verify requires the binary to exist);
#  3. `nix-instantiate --parse` of the module (syntax and unbound variables);
#  4. an evaluation of the module against a small stand-in for nixpkgs' lib
#     (nixpkgs is not available here), then `systemd-analyze verify` of the
#     mcp-agent unit it describes. This checks the module's own expressions and
#     directives, not the NixOS options it sets (users.users.*, tmpfiles, ...).
# Installs systemd, nix-bin and python3 (Debian) when missing, and fails (never
# skips) when a checker cannot be installed. Exits non-zero on any failed check.
# NIX_INSTANTIATE names the nix-instantiate to use (default: the one on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

tmp=$(mktemp -d)
trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"' EXIT

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=
apt_update_once() {
    if [ -z "$apt_updated" ]; then
        sudo_if_needed apt-get update -qq
        apt_updated=1
    fi
}

# Debian package candidate version, or empty when the configured repos have none.
apt_candidate() {
    apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2 }'
}

apt_install() {
    apt_update_once
    if ! sudo_if_needed env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >"$tmp/apt.log" 2>&1; then
        cat "$tmp/apt.log" >&2
        echo "check-deploy-files: could not install $*" >&2
        exit 1
    fi
}

failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

# --- tools -----------------------------------------------------------------
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "check-deploy-files: installing systemd (for systemd-analyze)"
    apt_install systemd
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "check-deploy-files: installing python3"
    apt_install python3
fi
nix_instantiate=${NIX_INSTANTIATE:-nix-instantiate}
if ! command -v "$nix_instantiate" >/dev/null 2>&1; then
    if [ -z "$(apt_candidate nix-bin)" ]; then apt_update_once; fi
    if [ -z "$(apt_candidate nix-bin)" ]; then
        echo "check-deploy-files: could not install nix-bin: no candidate in the configured" \
            "Debian repositories, so nix/module.nix cannot be checked" >&2
        exit 1
    fi
    echo "check-deploy-files: installing nix-bin (for nix-instantiate)"
    apt_install nix-bin
    if ! command -v "$nix_instantiate" >/dev/null 2>&1; then
        echo "check-deploy-files: could not install nix-bin: $nix_instantiate is still missing" >&2
        exit 1
    fi
fi

agent=$repo/target/debug/mcp-agent
if [ ! -x "$agent" ]; then
    echo "check-deploy-files: building mcp-agent"
    cargo build --quiet --bin mcp-agent
fi
help=$("$agent" serve --help)

# Verify a unit file, failing on any message: systemd-analyze verify exits 0
# on unknown keys and unparsable values, which it only reports.
verify_unit() {
    local unit=$1 label=$2 out
    if out=$(systemd-analyze verify "$unit" 2>&1) && [ -z "$out" ]; then
        echo "ok: systemd-analyze verify $label"
    else
        printf '%s\n' "$out" >&2
        fail "systemd-analyze verify $label"
    fi
}

# --- 1. flags and variables ------------------------------------------------
# MCP_AGENT_EXTRA_ARGS belongs to the unit (ExecStart), not to the agent.
vars=$(grep -ohE 'MCP_AGENT_[A-Z_]+' systemd/mcp-agent.service systemd/README.md nix/README.md \
    | grep -vx MCP_AGENT_EXTRA_ARGS | sort -u)
flags=$(grep -oE '"--[a-z-]+"' nix/module.nix | tr -d '"' | sort -u)
missing=
for name in $vars $flags; do
    grep -qE -- "(\[env: ${name}=|^ *${name}[ ,])" <<<"$help" || missing+=" $name"
done
if [ -n "$missing" ]; then
    fail "not in \`mcp-agent serve --help\`:$missing"
else
    echo "ok: $(wc -w <<<"$vars $flags") variables and flags exist in \`mcp-agent serve --help\`"
fi

# The descriptor limit the front door needs (room for [limits] max_connections).
for f in systemd/mcp-agent.service nix/module.nix; do
    if grep -qE '^ *LimitNOFILE *= *[0-9]+' "$f"; then
        echo "ok: $f sets LimitNOFILE"
    else
        fail "$f does not set LimitNOFILE"
    fi
done

# Readiness and the watchdog (src/agent/notify.rs): the agent sends READY=1
# and, fed by its actor tree, WATCHDOG=1.
for f in systemd/mcp-agent.service nix/module.nix; do
    missing=
    for kv in "Type notify" "NotifyAccess main" "WatchdogSec [0-9]+s"; do
        read -r key value <<<"$kv"
        grep -qE "^ *$key *= *\"?$value\"?;? *\$" "$f" || missing+=" $key=$value"
    done
    if [ -n "$missing" ]; then
        fail "$f does not set$missing"
    else
        echo "ok: $f sets Type=notify, NotifyAccess=main and WatchdogSec"
    fi
done

# --- 2. plain unit ---------------------------------------------------------
mkdir -p "$tmp/plain"
sed "s#^ExecStart=/usr/local/bin/mcp-agent #ExecStart=$agent #" \
    systemd/mcp-agent.service >"$tmp/plain/mcp-agent.service"
if ! grep -q "^ExecStart=$agent serve" "$tmp/plain/mcp-agent.service"; then
    fail "systemd/mcp-agent.service: no 'ExecStart=/usr/local/bin/mcp-agent serve' line to check"
else
    verify_unit "$tmp/plain/mcp-agent.service" systemd/mcp-agent.service
fi

# --- 3 and 4. NixOS module -------------------------------------------------
# No build users exist here, and parsing and evaluating need none.
nix_opts=(--option build-users-group "")
if "$nix_instantiate" "${nix_opts[@]}" --parse nix/module.nix >/dev/null; then
    echo "ok: nix-instantiate --parse nix/module.nix"
else
    fail "nix-instantiate --parse nix/module.nix"
fi

mkdir -p "$tmp/pkg/bin"
ln -s "$agent" "$tmp/pkg/bin/mcp-agent"
cat >"$tmp/eval.nix" <<'NIX'
# Evaluates nix/module.nix with a stand-in for the parts of nixpkgs' lib and
# NixOS' utils it uses, for two configurations, and returns the rendered
# mcp-agent units plus a list of problems.
{ modulePath, package }:
let
  b = builtins;
  mkType = name: check: { inherit name check; };
  lib = rec {
    mkOption = o: o;
    mkEnableOption = name: { type = types.bool; default = false; description = "Whether to enable ${name}."; };
    mkIf = cond: v: if cond then v else { };
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    optional = c: x: if c then [ x ] else [ ];
    optionals = c: xs: if c then xs else [ ];
    optionalString = c: s: if c then s else "";
    last = xs: b.elemAt xs (b.length xs - 1);
    # The module splits on ":" only, which needs no regex escaping.
    splitString = sep: s: b.filter b.isString (b.split sep s);
    toInt = s: let n = b.fromJSON s; in if b.isInt n then n else throw "toInt: ${s}";
    hasPrefix = p: s: b.substring 0 (b.stringLength p) s == p;
    types = {
      bool = mkType "bool" b.isBool;
      str = mkType "str" b.isString;
      path = mkType "path" (x: (b.isPath x || b.isString x) && b.substring 0 1 (toString x) == "/");
      package = mkType "package" (x: true);
      nullOr = t: mkType "nullOr ${t.name}" (x: x == null || t.check x);
      enum = vs: (mkType "enum" (x: b.elem x vs)) // { values = vs; };
      listOf = t: mkType "listOf ${t.name}" (x: b.isList x && b.all t.check x);
      ints = {
        positive = mkType "positive int" (x: b.isInt x && x > 0);
        unsigned = mkType "unsigned int" (x: b.isInt x && x >= 0);
        between = lo: hi: mkType "int ${toString lo}-${toString hi}" (x: b.isInt x && x >= lo && x <= hi);
      };
    };
  };
  # As in nixpkgs' nixos/lib/utils.nix.
  utils = rec {
    escapeSystemdExecArg = arg:
      let s = if b.isPath arg then "${arg}" else if b.isString arg then arg
              else if b.isInt arg then toString arg
              else throw "escapeSystemdExecArg only allows strings, paths and numbers";
      in b.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (b.toJSON s);
    escapeSystemdExecArgs = args: b.concatStringsSep " " (map escapeSystemdExecArg args);
  };

  evalWith = settings:
    let
      config = { services.mcp-agent = defaults // settings; networking.hostName = "rift"; };
      m = import (/. + modulePath) { inherit config lib utils; };
      opts = m.options.services.mcp-agent;
      defaults = b.listToAttrs (map (n: { name = n; value = opts.${n}.default; })
        (b.filter (n: opts.${n} ? default) (b.attrNames opts)));
      cfg = config.services.mcp-agent;
      undeclared = b.filter (n: !(opts ? ${n})) (b.attrNames settings);
      illTyped = b.filter (n: opts ? ${n} && !(opts.${n}.type.check cfg.${n})) (b.attrNames cfg);
      failed = map (a: a.message) (b.filter (a: !a.assertion) m.config.assertions);
    in {
      inherit m opts;
      problems =
        map (n: "option ${n} is not declared") undeclared
        ++ map (n: "option ${n} = ${b.toJSON cfg.${n}} does not have its declared type") illTyped
        ++ map (msg: "assertion failed: ${msg}") failed;
    };

  render = svc:
    let
      str = x: if b.isBool x then (if x then "true" else "false") else toString x;
      lines = section: attrs: "[${section}]\n" + b.concatStringsSep "" (b.concatLists (map
        (k: map (v: "${k}=${str v}\n") (let v = attrs.${k}; in if b.isList v then v else [ v ]))
        (b.attrNames attrs)));
    in
      lines "Unit" { Description = svc.description; Wants = svc.wants; After = svc.after; }
      + lines "Service" svc.serviceConfig
      + lines "Install" { WantedBy = svc.wantedBy; };

  base = { enable = true; auth = "local"; inherit package; };
  plain = evalWith base;
  full = evalWith (base // {
    listen = "0.0.0.0:9444";
    openFirewall = true;
    tlsCert = "/etc/mcp/tls/cert.pem";
    tlsKey = "/etc/mcp/tls/key.pem";
    extraArgs = [ "--tls-name" "rift.example" ];
  });
  mcias = evalWith (base // {
    auth = "mcias";
    mciasUrl = "https://mcias.example:8443";
    mciasCa = "/etc/mcp/mcias-ca.pem";
  });
  badMcias = evalWith (base // { auth = "mcias"; mciasCa = "/etc/mcp/mcias-ca.pem"; });
  badNode = evalWith (base // { node = "Rift_1"; });
  storeKey = evalWith (base // { tlsCert = "/etc/c.pem"; tlsKey = "${b.storeDir}/x-key.pem"; });
  opts = plain.opts;
  cfgPlain = plain.m.config;
in {
  units = {
    plain = render cfgPlain.systemd.services.mcp-agent;
    full = render full.m.config.systemd.services.mcp-agent;
    mcias = render mcias.m.config.systemd.services.mcp-agent;
  };
  problems =
    plain.problems ++ full.problems ++ mcias.problems
    ++ b.concatLists (map (n: if opts.${n} ? description then [ ] else [ "option ${n} has no description" ]) (b.attrNames opts))
    ++ (if opts.auth ? default then [ "option auth has a default; the operator must choose" ] else [ ])
    ++ (if opts.auth.type.values == [ "local" "mcias" ] then [ ] else [ "option auth is not enum [ \"local\" \"mcias\" ]" ])
    ++ (if badMcias.problems != [ ] then [ ] else [ "auth = \"mcias\" without mciasUrl was accepted" ])
    ++ (if b.match ".*--mcias-url.*" mcias.m.config.systemd.services.mcp-agent.serviceConfig.ExecStart != null
        then [ ] else [ "auth = \"mcias\" does not pass --mcias-url" ])
    ++ (if b.match ".*--mcias.*" cfgPlain.systemd.services.mcp-agent.serviceConfig.ExecStart == null
        then [ ] else [ "auth = \"local\" passes --mcias-* flags" ])
    ++ (if badNode.problems != [ ] then [ ] else [ "node = \"Rift_1\" was accepted" ])
    ++ (if storeKey.problems != [ ] then [ ] else [ "a tlsKey in the Nix store was accepted" ])
    ++ (if full.m.config.networking.firewall.allowedTCPPorts == [ 9444 ] then [ ] else [ "openFirewall does not open 9444" ])
    ++ (if cfgPlain.networking.firewall.allowedTCPPorts == [ ] then [ ] else [ "firewall opened without openFirewall" ])
    ++ (if cfgPlain.users.users.mcp.linger or false then [ ] else [ "users.users.mcp.linger is not set" ])
    ++ (if cfgPlain.virtualisation.podman.enable or false then [ ] else [ "virtualisation.podman is not enabled" ])
    ++ (if cfgPlain.systemd.services.mcp-agent.serviceConfig ? LimitNOFILE then [ ] else [ "LimitNOFILE is not set" ])
    ++ (let sc = cfgPlain.systemd.services.mcp-agent.serviceConfig; in
        (if (sc.Type or "") == "notify" then [ ] else [ "Type is not notify" ])
        ++ (if (sc.NotifyAccess or "") == "main" then [ ] else [ "NotifyAccess is not main" ])
        ++ (if sc ? WatchdogSec then [ ] else [ "WatchdogSec is not set" ]));
}
NIX
if "$nix_instantiate" "${nix_opts[@]}" --eval --strict --json "$tmp/eval.nix" \
    --argstr modulePath "$repo/nix/module.nix" --argstr package "$tmp/pkg" \
    >"$tmp/eval.json" 2>"$tmp/eval.err"; then
    python3 - "$tmp" <<'PY'
import json, os, sys
tmp = sys.argv[1]
result = json.load(open(f"{tmp}/eval.json"))
for name, text in result["units"].items():
    os.makedirs(f"{tmp}/nix-{name}", exist_ok=True)
    with open(f"{tmp}/nix-{name}/mcp-agent.service", "w") as f:
        f.write(text)
with open(f"{tmp}/eval.problems", "w") as f:
    f.write("".join(p + "\n" for p in result["problems"]))
PY
    if [ -s "$tmp/eval.problems" ]; then
        cat "$tmp/eval.problems" >&2
        fail "evaluation of nix/module.nix"
    else
        echo "ok: nix/module.nix evaluates (stand-in lib; three configurations, assertions, option types)"
    fi
    for name in plain full mcias; do
        verify_unit "$tmp/nix-$name/mcp-agent.service" "of the module's mcp-agent unit ($name configuration)"
    done
else
    cat "$tmp/eval.err" >&2
    fail "evaluation of nix/module.nix"
fi

if [ "$failures" -gt 0 ]; then
    echo "check-deploy-files: $failures check(s) failed" >&2
    exit 1
fi
echo "check-deploy-files: all checks passed"
