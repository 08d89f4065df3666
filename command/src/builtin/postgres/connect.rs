//! Where the sink connects: the URL of the pipeline file (or the variable
//! it names), with what it leaves out taken from the `PG*` variables as
//! libpq does (tokio-postgres reads none of them itself), then libpq's
//! defaults. No TLS: `sslmode=require` is refused with a clear reason.

use std::{str::FromStr, time::Duration};

use tokio_postgres::{Client, Config, NoTls};
use warren::PostgresSpec;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection settings of `spec`, the environment read through `env`.
/// `Err` says what is wrong, never quoting the password.
pub fn config(
    spec: &PostgresSpec,
    application: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, String> {
    let url = match spec.url.as_deref() {
        Some(text) => match text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) {
            Some(var) => Some(env(var).ok_or_else(|| {
                format!("the environment variable {var}, which sink.postgres.url names, is not set")
            })?),
            None => Some(text.to_string()),
        },
        None => None,
    };
    // tokio-postgres gives a host without a port 5432: PGPORT goes in first.
    let url = url.map(
        |url| match env("PGPORT").filter(|p| p.parse::<u16>().is_ok()) {
            Some(port) => with_port(&url, &port),
            None => url,
        },
    );
    let mut config = match &url {
        Some(url) => Config::from_str(url).map_err(|e| {
            format!(
                "the PostgreSQL URL {} does not parse: {e}",
                warren_ops::redact::url(url)
            )
        })?,
        None => Config::new(),
    };
    fill(&mut config, &env);
    if config.get_application_name().is_none() {
        config.application_name(application);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(config)
}

/// `url` with `:port` after each of its hosts, when none has a port.
fn with_port(url: &str, port: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (user, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    if hosts.is_empty() {
        return url.to_string();
    }
    let ported = |chunk: &str| match chunk.rfind(']') {
        Some(close) => chunk[close..].contains(':'),
        None => chunk.contains(':'),
    };
    if hosts.split(',').any(ported) {
        return url.to_string();
    }
    let hosts: Vec<String> = hosts.split(',').map(|h| format!("{h}:{port}")).collect();
    format!("{scheme}://{user}{}{tail}", hosts.join(","))
}

/// Fills what the URL leaves out from `PGHOST`, `PGPORT`, `PGUSER`,
/// `PGPASSWORD`, `PGDATABASE`, `PGAPPNAME` and `PGCONNECT_TIMEOUT`, then
/// libpq's defaults: the socket folder `/var/run/postgresql` when it
/// exists (else `localhost`) and the login name as user.
pub fn fill(config: &mut Config, env: &impl Fn(&str) -> Option<String>) {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        let hosts = set("PGHOST").unwrap_or_else(|| {
            if std::path::Path::new("/var/run/postgresql").is_dir() {
                "/var/run/postgresql".into()
            } else {
                "localhost".into()
            }
        });
        for host in hosts.split(',') {
            if host.starts_with('/') {
                config.host_path(host);
            } else {
                config.host(host);
            }
        }
    }
    if config.get_ports().is_empty()
        && let Some(port) = set("PGPORT").and_then(|p| p.parse::<u16>().ok())
    {
        config.port(port);
    }
    if config.get_user().is_none()
        && let Some(user) = set("PGUSER").or_else(|| set("USER"))
    {
        config.user(user);
    }
    if config.get_password().is_none()
        && let Some(password) = set("PGPASSWORD")
    {
        config.password(password);
    }
    if config.get_dbname().is_none()
        && let Some(db) = set("PGDATABASE")
    {
        config.dbname(db);
    }
    if config.get_application_name().is_none()
        && let Some(name) = set("PGAPPNAME")
    {
        config.application_name(name);
    }
    if config.get_connect_timeout().is_none()
        && let Some(secs) = set("PGCONNECT_TIMEOUT").and_then(|s| s.parse::<u64>().ok())
    {
        config.connect_timeout(Duration::from_secs(secs.max(2)));
    }
}

/// Where `config` points, for messages: hosts, port, user and database,
/// never the password.
pub fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{}:{port}/{}",
        config.get_user().unwrap_or("?"),
        hosts.join(","),
        config.get_dbname().or(config.get_user()).unwrap_or("?")
    )
}

/// Opens a connection; its driver runs as a task of its own until the
/// connection ends.
pub async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "the PostgreSQL connection ended");
        }
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn spec(url: Option<&str>) -> PostgresSpec {
        PostgresSpec {
            url: url.map(str::to_string),
            schema: None,
            table: "t".into(),
            id: "id".into(),
            body: Some("doc".into()),
            columns: Vec::new(),
            batch: 10,
        }
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn the_pg_variables_fill_what_the_url_leaves_out() {
        let vars = env(&[
            ("PGHOST", "db.internal"),
            ("PGPORT", "6543"),
            ("PGUSER", "loader"),
            ("PGPASSWORD", "s3cret"),
            ("PGDATABASE", "analytics"),
        ]);
        let config = config(&spec(Some("postgres://other@127.0.0.1/")), "w", &vars).unwrap();
        assert_eq!(describe(&config), "other@127.0.0.1:6543/analytics");
        assert_eq!(config.get_password(), Some(&b"s3cret"[..]));
        let config = super::config(&spec(None), "w", &vars).unwrap();
        assert_eq!(describe(&config), "loader@db.internal:6543/analytics");
        assert_eq!(config.get_application_name(), Some("w"));
    }

    #[test]
    fn pgport_goes_to_hosts_without_a_port_only() {
        assert_eq!(with_port("postgres://u:p@h/d", "6"), "postgres://u:p@h:6/d");
        assert_eq!(
            with_port("postgres://h1,[::1]", "6"),
            "postgres://h1:6,[::1]:6"
        );
        assert_eq!(with_port("postgres://h:5/d", "6"), "postgres://h:5/d");
        assert_eq!(
            with_port("postgres://[::1]:5/d", "6"),
            "postgres://[::1]:5/d"
        );
        assert_eq!(
            with_port("postgres:///d?host=/tmp", "6"),
            "postgres:///d?host=/tmp"
        );
    }

    #[test]
    fn the_url_wins_and_a_socket_folder_is_a_host_path() {
        let vars = env(&[("PGPORT", "1"), ("PGHOST", "/tmp/pg"), ("PGUSER", "x")]);
        let config = config(&spec(Some("postgres://u:pw@h:5433/d")), "w", &vars).unwrap();
        assert_eq!(describe(&config), "u@h:5433/d");
        assert_eq!(config.get_password(), Some(&b"pw"[..]));
        let config = super::config(&spec(None), "w", &vars).unwrap();
        assert_eq!(describe(&config), "x@/tmp/pg:1/x");
    }

    #[test]
    fn a_named_variable_is_read_and_its_absence_said() {
        let vars = env(&[("DATABASE_URL", "postgres://a:b@h/d")]);
        let config = config(&spec(Some("${DATABASE_URL}")), "w", &vars).unwrap();
        assert_eq!(describe(&config), "a@h:5432/d");
        let error = super::config(&spec(Some("${MISSING}")), "w", &vars).unwrap_err();
        assert!(error.contains("MISSING"), "{error}");
    }

    #[test]
    fn a_bad_url_is_said_without_its_password() {
        let error = config(
            &spec(Some("postgres://u:s3cret@h:notaport/d")),
            "w",
            env(&[]),
        )
        .unwrap_err();
        assert!(!error.contains("s3cret"), "{error}");
    }
}
