//! The one writer of the configuration file, for the code that makes a
//! config rather than reads one: `gcal-syncd demo`, the tests and the
//! benches. Every table denies unknown keys, so a key renamed in `raw.rs`
//! is renamed here and nowhere else.

/// A config file to write: loopback listeners on port 0, a store in
/// `store` beside the file, one account; the rest as set.
#[derive(Debug, Clone)]
pub struct ConfigText {
    log_level: String,
    api_base_url: Option<String>,
    hook_listen: String,
    public_url: String,
    api_listen: String,
    api_token_file: Option<String>,
    store_path: String,
    channels: Vec<(String, String)>,
    sync: Vec<(String, String)>,
    account: (String, String, String),
    tail: String,
}

/// A TOML basic string.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl ConfigText {
    /// One account `name` with the credentials file `credentials_file`,
    /// following the calendar `primary`.
    pub fn new(name: &str, credentials_file: &str) -> ConfigText {
        ConfigText {
            log_level: "warn".into(),
            api_base_url: None,
            hook_listen: "127.0.0.1:0".into(),
            public_url: "http://127.0.0.1/gcal/notify".into(),
            api_listen: "127.0.0.1:0".into(),
            api_token_file: None,
            store_path: "store".into(),
            channels: Vec::new(),
            sync: Vec::new(),
            account: (name.into(), credentials_file.into(), "[\"primary\"]".into()),
            tail: String::new(),
        }
    }

    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.into();
        self
    }

    /// `google.api_base_url`: the emulator's API root.
    pub fn google(mut self, api_root: &str) -> Self {
        self.api_base_url = Some(api_root.into());
        self
    }

    /// `hook.listen`, with `hook.public_url` pointing at it.
    pub fn hook(mut self, listen: &str) -> Self {
        self.public_url = format!("http://{listen}/gcal/notify");
        self.hook_listen = listen.into();
        self
    }

    pub fn public_url(mut self, url: &str) -> Self {
        self.public_url = url.into();
        self
    }

    pub fn api(mut self, listen: &str) -> Self {
        self.api_listen = listen.into();
        self
    }

    pub fn api_token_file(mut self, path: &str) -> Self {
        self.api_token_file = Some(path.into());
        self
    }

    /// A `[sync]` key; `value` is TOML (`"1s"` with its quotes, or `250`).
    pub fn sync(mut self, key: &str, value: &str) -> Self {
        self.sync.push((key.into(), value.into()));
        self
    }

    /// A `[channels]` key; `value` is TOML.
    pub fn channels(mut self, key: &str, value: &str) -> Self {
        self.channels.push((key.into(), value.into()));
        self
    }

    /// The account's `calendars`, as TOML (`"all"` or `["primary", "x"]`).
    pub fn calendars(mut self, toml: &str) -> Self {
        self.account.2 = toml.into();
        self
    }

    /// Verbatim TOML after the account (`[feed]`, `[[sinks]]`, lines of
    /// the account's table).
    pub fn tail(mut self, toml: &str) -> Self {
        self.tail.push_str(toml);
        self
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = format!("log_level = {}\n", quoted(&self.log_level));
        if let Some(root) = &self.api_base_url {
            out.push_str(&format!("[google]\napi_base_url = {}\n", quoted(root)));
        }
        out.push_str(&format!(
            "[hook]\nlisten = {}\npublic_url = {}\n[api]\nlisten = {}\n",
            quoted(&self.hook_listen),
            quoted(&self.public_url),
            quoted(&self.api_listen)
        ));
        if let Some(t) = &self.api_token_file {
            out.push_str(&format!("token_file = {}\n", quoted(t)));
        }
        out.push_str(&format!("[store]\npath = {}\n", quoted(&self.store_path)));
        for (table, keys) in [("channels", &self.channels), ("sync", &self.sync)] {
            if !keys.is_empty() {
                out.push_str(&format!("[{table}]\n"));
                for (k, v) in keys {
                    out.push_str(&format!("{k} = {v}\n"));
                }
            }
        }
        let (name, creds, calendars) = &self.account;
        out.push_str(&format!(
            "[[accounts]]\nname = {}\ncredentials_file = {}\ncalendars = {calendars}\n",
            quoted(name),
            quoted(creds)
        ));
        out.push_str(&self.tail);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_it_writes_is_a_valid_config() {
        let dir = std::env::temp_dir().join(format!("config-text-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).expect("dir");
        std::fs::write(
            dir.join("sa.json"),
            r#"{"type":"service_account","client_email":"a@b.iam.gserviceaccount.com","private_key_id":"k","private_key":"-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n","token_uri":"http://127.0.0.1:9/token"}"#,
        )
        .expect("sa");
        let text = ConfigText::new("a \"quoted\" name", "sa.json")
            .log_level("info")
            .google("http://127.0.0.1:9/")
            .hook("127.0.0.1:0")
            .sync("debounce", "\"1s\"")
            .channels("ttl", "\"1h\"")
            .channels("renew_before", "\"20m\"")
            .calendars("[\"primary\", \"x@group.calendar.google.com\"]")
            .tail("[feed]\nretention = \"1d\"\n")
            .render();
        std::fs::write(dir.join("config.toml"), &text).expect("write");
        let cfg = super::super::Config::load(&dir.join("config.toml"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
        let cfg = cfg.unwrap_or_else(|e| panic!("{text}\n{e:?}"));
        assert_eq!(cfg.accounts[0].name, "a \"quoted\" name");
        assert_eq!(
            cfg.accounts[0].calendars,
            super::super::CalendarSelection::List(vec![
                "primary".into(),
                "x@group.calendar.google.com".into()
            ]),
            "{text}"
        );
    }
}
