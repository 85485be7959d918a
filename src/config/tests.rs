//! Configuration validation: every error names the key and the line.

use super::*;

const BASE: &str = r#"
[session]
keys = ["ZGVtby1rZXktbmV2ZXItdXNlLWluLXByb2R1Y3Rpb24="]

[providers.op]
kind = "oidc"
issuer = "https://op.example.gouv.fr"
client_id = "client"
client_secret = "secret"

[[route]]
path = "/"
upstream = "http://127.0.0.1:9000"
scopes = ["email"]
[route.headers]
"X-Auth-Email" = "email"
"#;

fn err(text: &str) -> String {
    parse(text, "test.toml").unwrap_err().to_string()
}

#[test]
fn a_valid_config_parses_with_defaults() {
    let c = parse(BASE, "test.toml").unwrap();
    assert_eq!(c.server.prefix, "/.passerelle");
    assert_eq!(c.session.cookie_name, "passerelle");
    assert_eq!(c.session.max_lifetime, Duration::from_secs(12 * 3600));
    assert!(c.server.threads >= 1);
    assert_eq!(c.routes[0].headers[0].1, "email");
    assert_eq!(c.providers[0].auth_method, AuthMethod::ClientSecretBasic);
    assert!(c.providers[0].scopes.contains("openid"));
}

#[test]
fn unknown_keys_are_rejected_with_their_line() {
    let text = BASE.replace("kind = \"oidc\"", "kind = \"oidc\"\nclient_secrett = \"x\"");
    let e = err(&text);
    assert!(e.starts_with("test.toml:7:"), "{e}");
    assert!(e.contains("client_secrett"), "{e}");
}

#[test]
fn header_claim_must_be_released_by_route_scopes() {
    let text = BASE.replace(
        "\"X-Auth-Email\" = \"email\"",
        "\"X-Auth-Email\" = \"email\"\n\"X-Auth-Siret\" = \"siret\"",
    );
    let e = err(&text);
    assert!(e.contains("test.toml:17:"), "{e}");
    assert!(
        e.contains("route[0].headers.\"X-Auth-Siret\"") && e.contains("siret"),
        "{e}"
    );
}

#[test]
fn bad_values_name_key_and_line() {
    let e = err(&BASE.replace("path = \"/\"", "path = \"/\"\nauth = \"maybe\""));
    assert!(e.contains("test.toml:13: route[0].auth"), "{e}");
    let e = err(&BASE.replace("[session]", "[session]\nidle_timeout = \"30\""));
    assert!(
        e.contains("test.toml:3: session.idle_timeout") && e.contains("no unit"),
        "{e}"
    );
    let e = err(&BASE.replace("http://127.0.0.1:9000", "ftp://x"));
    assert!(e.contains("route[0].upstream"), "{e}");
    let e = err(&BASE.replace("https://op.example.gouv.fr", "http://op.example.gouv.fr"));
    assert!(
        e.contains("providers.op.issuer") && e.contains("https"),
        "{e}"
    );
    let e = err(&BASE.replace("ZGVtby1rZXktbmV2ZXItdXNlLWluLXByb2R1Y3Rpb24=", "c2hvcnQ="));
    assert!(e.contains("session.keys") && e.contains("32"), "{e}");
}

#[test]
fn secrets_from_environment_must_exist() {
    let e = err(&BASE.replace(
        "client_secret = \"secret\"",
        "client_secret = \"env:PASSERELLE_TEST_UNSET_SECRET\"",
    ));
    assert!(
        e.contains("test.toml:9: providers.op.client_secret") && e.contains("not set"),
        "{e}"
    );
}

#[test]
fn public_routes_cannot_forward_identity() {
    let e = err(&BASE.replace("path = \"/\"", "path = \"/\"\nauth = \"public\""));
    assert!(e.contains("public route"), "{e}");
}

#[test]
fn dev_provider_refuses_non_loopback_unless_allowed() {
    let dev = BASE.replace(
        "kind = \"oidc\"\nissuer = \"https://op.example.gouv.fr\"",
        "kind = \"dev\"\nlisten = \"0.0.0.0:8081\"",
    );
    let e = err(&dev);
    assert!(
        e.contains("providers.op.listen") && e.contains("loopback"),
        "{e}"
    );
    let allowed = dev.replace(
        "listen = \"0.0.0.0:8081\"",
        "listen = \"0.0.0.0:8081\"\nallow_non_loopback = true",
    );
    assert!(parse(&allowed, "t").is_ok());
}

#[test]
fn route_providers_must_exist() {
    let e = err(&BASE.replace(
        "scopes = [\"email\"]",
        "scopes = [\"email\"]\nproviders = [\"nope\"]",
    ));
    assert!(
        e.contains("route[0].providers") && e.contains("nope"),
        "{e}"
    );
}

#[test]
fn example_config_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let c = load(&path).unwrap();
    assert!(matches!(c.providers[0].kind, ProviderKind::Dev(_)));
    assert!(c.echo.is_some());
}

const PROCONNECT: &str = r#"
[session]
keys = ["ZGVtby1rZXktbmV2ZXItdXNlLWluLXByb2R1Y3Rpb24="]

[providers.pc]
kind = "proconnect"
client_id = "client"
client_secret = "secret"

[[route]]
upstream = "http://127.0.0.1:9000"
scopes = ["email", "siret"]
require = { siret = ["21340126800130"], email_domain = ["Example.gouv.fr"] }
[route.headers]
"X-Auth-Siret" = "siret"
"#;

#[test]
fn proconnect_preset_fills_in_the_federation_defaults() {
    let c = parse(PROCONNECT, "pc.toml").unwrap();
    let p = &c.providers[0];
    assert_eq!(p.issuer, "https://fca.integ01.dev-agentconnect.fr/api/v2");
    assert_eq!(p.auth_method, AuthMethod::ClientSecretPost);
    assert!(p.request_amr);
    for s in [
        "openid",
        "given_name",
        "usual_name",
        "email",
        "uid",
        "siret",
        "idp_id",
    ] {
        assert!(p.scopes.contains(s), "{s}");
    }
    assert_eq!(p.display_name, "ProConnect");
    assert_eq!(c.routes[0].require.email_domain, vec!["example.gouv.fr"]);
    let rie = parse(
        &PROCONNECT.replace(
            "kind = \"proconnect\"",
            "kind = \"proconnect\"\nnetwork = \"rie\"\nenvironment = \"production\"",
        ),
        "pc.toml",
    )
    .unwrap();
    assert_eq!(
        rie.providers[0].issuer,
        "https://auth.agentconnect.rie.gouv.fr/api/v2"
    );
}

#[test]
fn nc_connect_preset_versions() {
    let text = PROCONNECT.replace("kind = \"proconnect\"", "kind = \"nc-connect\"").replace("\"siret\"]\nrequire = { siret = [\"21340126800130\"], email_domain = [\"Example.gouv.fr\"] }", "\"siret\"]");
    let c = parse(&text, "nc.toml").unwrap();
    assert_eq!(
        c.providers[0].issuer,
        "https://connect.gouv.nc/v3/realms/nc-connect"
    );
    assert_eq!(c.providers[0].auth_method, AuthMethod::ClientSecretBasic);
    let v2 = parse(
        &text.replace(
            "kind = \"nc-connect\"",
            "kind = \"nc-connect\"\nversion = 2\nenvironment = \"test\"",
        ),
        "nc.toml",
    )
    .unwrap();
    assert_eq!(v2.providers[0].issuer, "https://connect-dev.gouv.nc");
    let e = err(&text.replace(
        "kind = \"nc-connect\"",
        "kind = \"nc-connect\"\nversion = 4",
    ));
    assert!(e.contains("providers.pc.version"), "{e}");
    let e = err(&text.replace(
        "kind = \"nc-connect\"",
        "kind = \"nc-connect\"\nnetwork = \"rie\"",
    ));
    assert!(
        e.contains("providers.pc.network") && e.contains("proconnect"),
        "{e}"
    );
}

#[test]
fn require_rules_need_their_claims_released() {
    let e = err(&PROCONNECT.replace("scopes = [\"email\", \"siret\"]", "scopes = [\"siret\"]"));
    assert!(
        e.contains("route[0].require.email_domain") && e.contains("email"),
        "{e}"
    );
    let e = err(&PROCONNECT.replace("\"21340126800130\"]", "\"2134\"]"));
    assert!(
        e.contains("route[0].require.siret") && e.contains("14 digits"),
        "{e}"
    );
    let e = err(&PROCONNECT.replace(
        "email_domain = [\"Example.gouv.fr\"]",
        "email_domain = [\"*.gouv.fr\"]",
    ));
    assert!(e.contains("route[0].require.email_domain"), "{e}");
}

#[test]
fn hints_and_acr_are_validated() {
    let e = err(&PROCONNECT.replace(
        "client_id = \"client\"",
        "client_id = \"client\"\nprompt = \"sometimes\"",
    ));
    assert!(e.contains("providers.pc.prompt"), "{e}");
    let e = err(&PROCONNECT.replace(
        "client_id = \"client\"",
        "client_id = \"client\"\nsiret_hint = \"123\"",
    ));
    assert!(e.contains("providers.pc.siret_hint"), "{e}");
    let ok = parse(&PROCONNECT.replace("client_id = \"client\"", "client_id = \"client\"\nacr = { essential = true, values = [\"eidas2\"] }\nprompt = \"login\""), "pc.toml").unwrap();
    assert_eq!(ok.providers[0].acr.as_ref().unwrap().values, vec!["eidas2"]);
    assert_eq!(ok.providers[0].hints.prompt.as_deref(), Some("login"));
    let e = err(&PROCONNECT.replace(
        "client_id = \"client\"",
        "client_id = \"client\"\negress_proxy = \"socks://x\"",
    ));
    assert!(e.contains("providers.pc.egress_proxy"), "{e}");
}

#[test]
fn logout_clear_site_data_defaults_to_everything_and_can_be_narrowed() {
    let c = parse(BASE, "test.toml").unwrap();
    assert_eq!(
        SiteData::header_value(&c.session.logout_clear_site_data).as_deref(),
        Some("\"cache\", \"cookies\", \"storage\"")
    );
    let none = BASE.replace("[session]\n", "[session]\nlogout_clear_site_data = []\n");
    let c = parse(&none, "test.toml").unwrap();
    assert_eq!(
        SiteData::header_value(&c.session.logout_clear_site_data),
        None
    );
    let bad = BASE.replace(
        "[session]\n",
        "[session]\nlogout_clear_site_data = [\"cache\", \"executionContexts\"]\n",
    );
    let e = err(&bad);
    assert!(e.starts_with("test.toml:3:"), "{e}");
    assert!(
        e.contains("session.logout_clear_site_data") && e.contains("executionContexts"),
        "{e}"
    );
}

#[test]
fn max_header_bytes_is_bounded() {
    let c = parse(BASE, "test.toml").unwrap();
    assert_eq!(c.server.max_header_bytes, 64 * 1024);
    let small = format!("[server]\nmax_header_bytes = 1024\n{BASE}");
    let e = err(&small);
    assert!(e.starts_with("test.toml:2:"), "{e}");
    assert!(e.contains("server.max_header_bytes"), "{e}");
}

#[test]
fn windows_paths_make_case_variants_duplicates() {
    let two = format!(
        "{BASE}\n[[route]]\npath = \"/ADMIN\"\nupstream = \"http://127.0.0.1:9001\"\n[[route]]\npath = \"/admin\"\nupstream = \"http://127.0.0.1:9002\"\n"
    );
    let c = parse(&two, "test.toml").unwrap();
    assert_eq!(c.server.path_reading, crate::routes::PathReading::Exact);
    let folded = format!("[server]\nwindows_paths = true\n{two}");
    let e = err(&folded);
    assert!(e.contains("another route already has"), "{e}");
}

/// `[session]` with `extra` lines appended after the keys (a `[session.redis]` table, say).
fn with_session(extra: &str) -> String {
    BASE.replace(
        "keys = [\"ZGVtby1rZXktbmV2ZXItdXNlLWluLXByb2R1Y3Rpb24=\"]\n",
        &format!("keys = [\"ZGVtby1rZXktbmV2ZXItdXNlLWluLXByb2R1Y3Rpb24=\"]\n{extra}\n"),
    )
}

#[test]
fn redis_store_settings_are_read() {
    let c = parse(
        &with_session(
            "store = \"redis\"\nrecheck_interval = \"10s\"\n[session.redis]\nurl = \"redis://127.0.0.1:6379/2\"\nkey_prefix = \"app1:\"\ntimeout = \"250ms\"",
        ),
        "test.toml",
    )
    .unwrap();
    assert_eq!(c.session.store, SessionStore::Redis);
    assert_eq!(c.session.recheck_interval, Duration::from_secs(10));
    assert_eq!(c.session.redis_grace, Duration::from_secs(60));
    let r = c.session.redis.unwrap();
    assert_eq!(
        r.target,
        RedisTarget::Single("redis://127.0.0.1:6379/2".into())
    );
    assert_eq!(r.key_prefix, "app1:");
    assert_eq!(r.timeout, Duration::from_millis(250));
    let s = parse(
        &with_session("[session.redis]\nsentinel = { master = \"mymaster\", nodes = [\"redis://10.0.0.1:26379\", \"redis://10.0.0.2:26379\"] }"),
        "test.toml",
    )
    .unwrap();
    assert_eq!(s.session.store, SessionStore::Cookie, "revocation set only");
    assert!(
        matches!(s.session.redis.unwrap().target, RedisTarget::Sentinel { ref master, ref nodes, .. } if master == "mymaster" && nodes.len() == 2)
    );
}

#[test]
fn redis_mistakes_name_the_key_and_line() {
    let cases = [
        ("store = \"redis\"", "session.store", "[session.redis]"),
        ("store = \"memcache\"", "session.store", "not one of"),
        ("[session.redis]\nurl = \"http://127.0.0.1:6379\"", "session.redis.url", "not a Redis URL"),
        ("[session.redis]\nurl = \"redis://:hunter2@\"", "session.redis.url", "***"),
        ("[session.redis]\nsentinel = { nodes = [\"redis://10.0.0.1:26379\"] }", "session.redis.sentinel.master", "missing"),
        ("[session.redis]\nsentinel = { master = \"m\" }", "session.redis.sentinel.nodes", "missing"),
        ("[session.redis]\nsentinel = { master = \"m\", nodes = [\"redis://a:1\"] }\ncluster = [\"redis://b:2\"]", "session.redis", "together"),
        ("[session.redis]\nurl = \"redis://a:1\"\ncluster = [\"redis://b:2\"]", "session.redis.url", "not two"),
        ("[session.redis]\ncluster = []", "session.redis.cluster", "empty"),
        ("[session.redis]\nkey_prefix = \"x\"", "session.redis", "say where Redis is"),
        ("[session.redis]\nurl = \"redis://a:1\"\npassword = \"env:PASSERELLE_SURELY_UNSET_REDIS\"", "session.redis.password", "not set"),
        ("[session.redis]\nurl = \"redis://a:1\"\ntimeout = \"1m\"", "session.redis.timeout", "30s"),
        ("[session.redis]\nurl = \"redis://a:1\"\nca_file = \"/nonexistent/ca.pem\"", "session.redis.ca_file", "cannot read"),
        ("recheck_interval = \"0s\"", "session.recheck_interval", "more than zero"),
        ("[session.redis]\nurl = \"redis://a:1\"\nsurprise = 1", "surprise", "unknown field"),
    ];
    for (extra, key, words) in cases {
        let e = err(&with_session(extra));
        assert!(e.contains(key) && e.contains(words), "{extra}: {e}");
        assert!(e.starts_with("test.toml:"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}

#[test]
fn the_admin_token_needs_the_admin_listener_redis_and_length() {
    let redis = with_session("[session.redis]\nurl = \"redis://127.0.0.1:6379\"");
    let server = |token: &str, listen: bool| {
        format!(
            "[server]\nadmin_token = \"{token}\"\n{}",
            if listen {
                "admin_listen = \"127.0.0.1:9090\"\n"
            } else {
                ""
            }
        )
    };
    let long = "0123456789abcdef0123456789";
    assert!(err(&format!("{}{redis}", server("short", true))).contains("at least 24"));
    assert!(err(&format!("{}{redis}", server(long, false))).contains("server.admin_listen"));
    let e = err(&format!("{}{BASE}", server(long, true)));
    assert!(
        e.starts_with("test.toml:2:") && e.contains("[session.redis]"),
        "{e}"
    );
    let c = parse(&format!("{}{redis}", server(long, true)), "test.toml").unwrap();
    assert!(c.server.admin_token.is_some());
}

#[test]
fn an_identity_prefix_that_would_strip_a_reserved_header_is_refused() {
    for prefix in ["Host", "hos", "Content-", "conn", "Cookie", "TRANS"] {
        let text = format!("[server]\nidentity_header_prefix = \"{prefix}\"\n{BASE}");
        let e = err(&text);
        assert!(
            e.contains("test.toml:2: server.identity_header_prefix") && e.contains("would strip"),
            "{prefix}: {e}"
        );
    }
    let text = format!("[server]\nidentity_header_prefix = \"X-Agent-\"\n{BASE}");
    assert_eq!(
        parse(&text, "test.toml")
            .unwrap()
            .server
            .identity_header_prefix,
        "x-agent-"
    );
}

/// The messages a newcomer met (issue 12), each with its exact text.
mod first_hour {
    use super::*;

    #[test]
    fn a_route_without_upstream_names_the_route() {
        let text = BASE.replace("upstream = \"http://127.0.0.1:9000\"\n", "")
            + "\n[echo]\nlisten = \"127.0.0.1:9001\"\n";
        assert_eq!(
            err(&text),
            "test.toml:11: route[0]: missing field `upstream`"
        );
    }

    #[test]
    fn an_unknown_key_in_a_route_is_indexed() {
        let text = BASE.replace(
            "scopes = [\"email\"]",
            "scopes = [\"email\"]\nscope = \"email\"",
        );
        assert_eq!(
            err(&text),
            "test.toml:15: route[0].scope: unknown field `scope`, expected one of `host`, `path`, `upstream`, `auth`, `providers`, `scopes`, `headers`, `header_encoding`, `health_check`, `acr`, `require`, `prompt`, `idp_hint`, `login_hint`, `siret_hint`, `cors_allow_preflight`, `cache`, `purpose`, `upstream_tls`, `upstream_h2`, `client_certificate`, `assertion`"
        );
        let second = format!("{BASE}\n[[route]]\npath = \"/b\"\nupstream = \"http://127.0.0.1:9000\"\n[route.headers]\n\"X-A\" = \"sirett\"\n");
        assert_eq!(
            err(&second),
            "test.toml:22: route[1].headers.\"X-A\": claim `sirett` is unknown: did you mean `siret`? (a custom claim of your provider needs the scope of the same name in `scopes`)"
        );
    }

    #[test]
    fn a_misspelt_kind_is_named_before_the_keys_it_decides() {
        let text = "[session]\nkeys = [\"ZGVtby1rZXktbmV2ZXItdXNlLWluLXByb2R1Y3Rpb24=\"]\n[providers.dev]\nkind = \"proconect\"\nlisten = \"127.0.0.1:9000\"\n[[route]]\nupstream = \"http://127.0.0.1:9001\"\n";
        assert_eq!(
            err(text),
            "test.toml:4: providers.dev.kind: `proconect` is not a kind of provider (did you mean \"proconnect\"?): one of \"proconnect\", \"nc-connect\", \"oidc\", \"dev\""
        );
    }

    #[test]
    fn two_services_on_one_address_are_refused() {
        let text = "[session]\nkeys = [\"ZGVtby1rZXktbmV2ZXItdXNlLWluLXByb2R1Y3Rpb24=\"]\n[providers.dev]\nkind = \"dev\"\nlisten = \"127.0.0.1:9000\"\n[echo]\nlisten = \"127.0.0.1:9000\"\n[[route]]\nupstream = \"http://127.0.0.1:9000\"\n";
        assert_eq!(
            err(text),
            "test.toml:7: echo.listen: 127.0.0.1:9000 is already `providers.dev.listen`: each service needs its own address"
        );
        let any = "[server]\nlisten = [\"0.0.0.0:8080\"]\nadmin_listen = \"127.0.0.1:8080\"\n[session]\nkeys = [\"ZGVtby1rZXktbmV2ZXItdXNlLWluLXByb2R1Y3Rpb24=\"]\n[[route]]\nupstream = \"http://127.0.0.1:9000\"\nauth = \"public\"\n";
        assert_eq!(
            err(any),
            "test.toml:3: server.admin_listen: 127.0.0.1:8080 is already `server.listen`: each service needs its own address"
        );
    }

    #[test]
    fn nc_connect_v2_login_is_released_by_profile() {
        let text = "[session]\nkeys = [\"ZGVtby1rZXktbmV2ZXItdXNlLWluLXByb2R1Y3Rpb24=\"]\n[providers.nc]\nkind = \"nc-connect\"\nversion = 2\nclient_id = \"c\"\nclient_secret = \"s\"\n[[route]]\nupstream = \"http://127.0.0.1:9000\"\nscopes = [\"profile\"]\n[route.headers]\n\"X-Auth-Login\" = \"login\"\n";
        assert!(parse(text, "test.toml").is_ok());
    }
}
