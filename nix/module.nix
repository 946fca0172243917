# NixOS module for mcp-agent, the MCP node agent. Options and an example:
# nix/README.md.
{ config, lib, utils, ... }:

let
  cfg = config.services.mcp-agent;
  inherit (lib) mkOption types;

  uid = toString cfg.uid;
  runtimeDir = "/run/user/${uid}";
  socket = "${runtimeDir}/podman/podman.sock";
  listenPort = lib.toInt (lib.last (lib.splitString ":" cfg.listen));

  tls = cfg.tlsCert != null;

  args = [
    "serve"
    "--auth" cfg.auth
    "--listen" cfg.listen
    "--node" cfg.node
    "--state-dir" cfg.stateDir
    "--runtime-socket" socket
    "--stop-timeout" cfg.stopTimeout
    "--srv-root" cfg.srvDir
  ] ++ lib.optionals (cfg.auth == "mcias") ([
    "--mcias-url" cfg.mciasUrl
    "--mcias-ca" (toString cfg.mciasCa)
  ] ++ lib.optionals (cfg.mciasRole != null) [ "--mcias-role" cfg.mciasRole ])
  ++ cfg.extraArgs;

  # The certificate and key reach the agent as systemd credentials (%d is the
  # credentials directory), so the key can stay readable by root only.
  # Appended after escaping: escapeSystemdExecArgs would turn %d into %%d.
  tlsArgs = lib.optionalString tls " --tls-cert %d/tls-cert --tls-key %d/tls-key";

  isStorePathOrLiteral = p: builtins.isPath p || lib.hasPrefix builtins.storeDir (toString p);
in
{
  options.services.mcp-agent = {
    enable = lib.mkEnableOption "mcp-agent, the MCP node agent (gRPC over TLS, rootless podman)";

    package = mkOption {
      type = types.package;
      example = lib.literalExpression "inputs.mcp.packages.\${pkgs.system}.default";
      description = "Package providing bin/mcp-agent. nixpkgs has none: pass your build of this repository.";
    };

    user = mkOption {
      type = types.str;
      default = "mcp";
      description = ''
        User the agent and its rootless podman run as. It is created by this
        module as a normal user with a home: rootless podman keeps images and
        containers under ~/.local/share/containers.
      '';
    };

    group = mkOption {
      type = types.str;
      default = "mcp";
      description = "Primary group of {option}`services.mcp-agent.user`.";
    };

    uid = mkOption {
      type = types.ints.between 1000 59999;
      default = 2000;
      description = ''
        Fixed uid of {option}`services.mcp-agent.user`. Fixed so that the
        podman socket path, /run/user/<uid>/podman/podman.sock, is known when
        the unit is built.
      '';
    };

    subIdStart = mkOption {
      type = types.ints.positive;
      default = 1000000000;
      description = ''
        First subordinate uid and gid of the user (container uids 1 and up map
        from here). Far above the ranges NixOS hands out itself
        (100000 + n * 65536 for users with autoSubUidGidRange), which do not
        take fixed ranges into account: a range such as 200000 would overlap
        the second automatically provisioned user's.
      '';
    };

    subIdCount = mkOption {
      type = types.ints.positive;
      default = 65536;
      description = "Number of subordinate uids and gids of the user.";
    };

    stateDir = mkOption {
      type = types.path;
      default = "/srv/mcp";
      description = "Registry (mcp.db), generated TLS material (tls/) and, in local auth mode, the token. Mode 0700, owned by the user.";
    };

    srvDir = mkOption {
      type = types.path;
      default = "/srv";
      description = ''
        Parent of the per-service directories (/srv/<service>/) that file
        transfer and volumes use (the agent's --srv-root). Made owned by the
        user and writable by the agent.
      '';
    };

    listen = mkOption {
      type = types.str;
      default = "127.0.0.1:9444";
      example = "0.0.0.0:9444";
      description = "Address and port of the TLS gRPC listener (there is no plaintext listener).";
    };

    node = mkOption {
      type = types.str;
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      description = "This node's name, as the CLI's config names it. Must match ^[a-z0-9][a-z0-9-]{0,62}$.";
    };

    auth = mkOption {
      type = types.enum [ "local" "mcias" ];
      description = ''
        How bearer tokens are checked. No default: choose explicitly.

        `mcias`: every token is verified with MCIAS, the identity service
        ({option}`services.mcp-agent.mciasUrl`, {option}`services.mcp-agent.mciasCa`);
        the `[auth]` section of the agent config (`--config`, through
        {option}`services.mcp-agent.extraArgs`) says which roles and accounts
        may read or operate. For a fleet.

        `local`: one random token, created at first start in
        <stateDir>/token (mode 0600). There is no identity service and no
        roles: whoever can read that file commands this agent. For a single
        machine (CLI and agent on one host) or a demo only, not for a fleet.
      '';
    };

    mciasUrl = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "https://mcias.example:8443";
      description = "MCIAS base URL (https only), with `auth = \"mcias\"`.";
    };

    mciasCa = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/etc/mcp/mcias-ca.pem";
      description = "CA certificate (PEM) that signed MCIAS's certificate, with `auth = \"mcias\"`. The only CA the agent trusts for MCIAS.";
    };

    mciasRole = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "Deprecated (`--mcias-role`): when set, the only role that may operate, replacing `operate_roles` of the agent config's `[auth]`. Null: `[auth]` alone decides (admin and user operate, viewer reads, by default).";
    };

    stopTimeout = mkOption {
      type = types.ints.unsigned;
      default = 10;
      description = "Seconds a container gets to stop before it is killed.";
    };

    tlsCert = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/var/lib/acme/rift.example/cert.pem";
      description = ''
        Server certificate (PEM). Null: the agent creates a private CA and a
        certificate in <stateDir>/tls at first start. Read by systemd
        (LoadCredential), so it may be owned by root.
      '';
    };

    tlsKey = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/var/lib/acme/rift.example/key.pem";
      description = ''
        Server key (PEM), set together with {option}`services.mcp-agent.tlsCert`.
        Give it as a string, not a Nix path literal: a path literal is copied
        into the world-readable Nix store.
      '';
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--tls-name" "rift.example" ];
      description = "Further arguments to `mcp-agent serve`.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the port of {option}`services.mcp-agent.listen` in the firewall.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = builtins.match "[a-z0-9][a-z0-9-]{0,62}" cfg.node != null;
        message = "services.mcp-agent.node = \"${cfg.node}\" is not a valid node name ([a-z0-9][a-z0-9-]{0,62}): set it explicitly.";
      }
      {
        assertion = cfg.auth != "mcias"
          || (cfg.mciasUrl != null && lib.hasPrefix "https://" cfg.mciasUrl && cfg.mciasCa != null);
        message = "services.mcp-agent.auth = \"mcias\" needs mciasUrl (https://...) and mciasCa.";
      }
      {
        assertion = (cfg.tlsCert == null) == (cfg.tlsKey == null);
        message = "services.mcp-agent.tlsCert and tlsKey are set together or not at all.";
      }
      {
        assertion = cfg.tlsKey == null || !(isStorePathOrLiteral cfg.tlsKey);
        message = "services.mcp-agent.tlsKey must be a path string outside the Nix store (the store is world-readable).";
      }
    ];

    warnings = lib.optional
      (cfg.openFirewall && (lib.hasPrefix "127." cfg.listen || lib.hasPrefix "[::1]" cfg.listen))
      "services.mcp-agent.openFirewall is set but the agent listens on loopback (${cfg.listen}).";

    users.groups.${cfg.group} = { };

    users.users.${cfg.user} = {
      isNormalUser = true;
      uid = cfg.uid;
      group = cfg.group;
      description = "MCP node agent";
      subUidRanges = [ { startUid = cfg.subIdStart; count = cfg.subIdCount; } ];
      subGidRanges = [ { startGid = cfg.subIdStart; count = cfg.subIdCount; } ];
      # Keeps the user manager, and with it the podman socket, running
      # without a login session.
      linger = true;
    };

    virtualisation.podman.enable = true;

    # The API socket is podman's own user unit (podman.socket, from the podman
    # package): %t/podman/podman.sock in the user manager, so owned by the
    # user. virtualisation.podman enables it for every user manager already;
    # repeated here because the agent cannot work without it.
    systemd.user.sockets.podman.wantedBy = [ "sockets.target" ];

    systemd.tmpfiles.rules = [
      "d ${cfg.srvDir} 0755 ${cfg.user} ${cfg.group} - -"
      "d ${cfg.stateDir} 0700 ${cfg.user} ${cfg.group} - -"
    ];

    networking.firewall.allowedTCPPorts = lib.optionals cfg.openFirewall [ listenPort ];

    systemd.services.mcp-agent = {
      description = "MCP node agent";
      wantedBy = [ "multi-user.target" ];
      # The user manager creates /run/user/<uid> and listens on the socket.
      wants = [ "network-online.target" "user@${uid}.service" ];
      after = [ "network-online.target" "user@${uid}.service" ];

      serviceConfig = {
        # The agent says READY=1 once it serves (and STOPPING=1 when it
        # stops); only its own process may speak for it.
        Type = "notify";
        NotifyAccess = "main";
        # Pinged every 15 s, each time a round trip through the agent's
        # actor tree came back; wedged for 30 s, it is killed and restarted.
        WatchdogSec = "30s";
        User = cfg.user;
        Group = cfg.group;
        ExecStart = "${cfg.package}/bin/mcp-agent ${utils.escapeSystemdExecArgs args}${tlsArgs}";
        LoadCredential = lib.optionals tls [
          "tls-cert:${toString cfg.tlsCert}"
          "tls-key:${toString cfg.tlsKey}"
        ];
        Restart = "on-failure";
        RestartSec = "5s";
        # Exit status 2 is a usage error (bad flag or value): retrying cannot help.
        RestartPreventExitStatus = 2;
        TimeoutStopSec = 30;
        UMask = "0077";
        # Each client connection holds a descriptor: room for [limits]
        # max_connections (512 by default) and the agent's own files.
        LimitNOFILE = 65536;

        # Podman runs in the user manager, outside this sandbox: the agent
        # only talks to its socket, so it needs no namespaces, no setuid
        # helpers and no access to ~/.local/share/containers.
        NoNewPrivileges = true;
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        ProtectSystem = "strict";
        # Read-only also covers /run/user: connecting to a socket works on a
        # read-only mount, so the runtime directory needs no write access.
        ProtectHome = "read-only";
        ReadWritePaths = [ cfg.stateDir cfg.srvDir ];
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        # Not ProcSubset=pid: node resources come from /proc/meminfo and
        # /proc/loadavg.
        ProtectProc = "invisible";
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" ];
        SystemCallErrorNumber = "EPERM";
      };
    };
  };
}
