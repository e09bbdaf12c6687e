//! One `[[certificate]]` table checked into a [`CertConfig`], each setting its own or the
//! `[defaults]` one: names, product and its name limit, term, software, key, contacts, DNS mode
//! and hook, reload, renewal, spending (`max_paid_orders`, `new_orders`, `certificate_id`),
//! hook timeout, and who may read the installed key.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::defaults;
use super::file::{RawSettings, Webroot};
use super::validate::Validator;
use super::values::{
    KNOWN_PRODUCTS, KNOWN_SOFTWARE, MAX_NAME, SMIME_PRODUCTS, is_hostname, is_mailbox, parse_renew_before,
};
use super::{CertConfig, CertSettings, ContactSpec, DnsMode, FileValidation, KeyKind, Smime, Validation, WarningKind};

impl Validator<'_> {
    pub(super) fn certificate(
        &mut self,
        i: usize,
        span: Range<usize>,
        c: RawSettings,
        d: &RawSettings,
        base: &Path,
    ) -> Option<CertConfig> {
        let f = |name: &str| format!("certificate[{i}].{name}");
        let before = self.errors.len();
        let Some(name) = c.name.clone() else {
            self.err(span, &f("name"), "every [[certificate]] needs a name");
            return None;
        };
        let name_span = name.span();
        let name = name.into_inner().to_ascii_lowercase();
        let mailbox = is_mailbox(&name);
        if !is_hostname(&name) && !mailbox {
            self.err(
                name_span.clone(),
                &f("name"),
                &format!("'{name}' is not a host name such as www.example.com (nor, for an S/MIME product, an e-mail address)"),
            );
        } else if name.len() > MAX_NAME {
            self.err(
                name_span.clone(),
                &f("name"),
                &format!(
                    "is {} bytes long; a certificate's name becomes a file name (NAME.json), so it may have at most {MAX_NAME} (list a longer name in alt_names)",
                    name.len()
                ),
            );
        }
        let mut alt_names = Vec::new();
        if let Some(alts) = &c.alt_names {
            let mut seen = std::collections::HashSet::new();
            for a in alts.get_ref() {
                let a = a.to_ascii_lowercase();
                if !is_hostname(&a) {
                    self.err(alts.span(), &f("alt_names"), &format!("'{a}' is not a host name"));
                } else if a != name && seen.insert(a.clone()) {
                    alt_names.push(a);
                }
            }
        }
        // Each setting: the certificate's own value, else the default.
        macro_rules! pick {
            ($field:ident) => {
                c.$field.clone().map(|v| (v, f(stringify!($field)))).or_else(|| {
                    d.$field
                        .clone()
                        .map(|v| (v, format!("defaults.{}", stringify!($field))))
                })
            };
        }
        let product: &'static str = match pick!(product) {
            Some((p, field)) => {
                let v = p.get_ref().to_ascii_uppercase();
                match KNOWN_PRODUCTS.iter().find(|k| **k == v) {
                    Some(known) => known,
                    None => {
                        self.err(
                            p.span(),
                            &field,
                            &format!(
                                "unknown product '{}' (known: {})",
                                p.get_ref(),
                                KNOWN_PRODUCTS.join(", ")
                            ),
                        );
                        defaults::PRODUCT
                    }
                }
            }
            None => defaults::PRODUCT,
        };
        let smime_product = SMIME_PRODUCTS.contains(&product);
        if mailbox && !smime_product {
            self.err(
                name_span.clone(),
                &f("name"),
                &format!(
                    "'{name}' is an e-mail address: it needs an S/MIME product (product = \"{}\"), not {product}",
                    SMIME_PRODUCTS[0]
                ),
            );
        } else if smime_product && !mailbox {
            self.err(
                name_span.clone(),
                &f("name"),
                &format!("{product} is an S/MIME product: the name must be the e-mail address the certificate is for"),
            );
        }
        if smime_product && !alt_names.is_empty() {
            let at = c.alt_names.as_ref().map(Spanned::span).unwrap_or(name_span.clone());
            self.err(
                at,
                &f("alt_names"),
                "an S/MIME certificate is for one mailbox: no alt_names",
            );
        }
        let smime = self.smime(&c, d, &f, &span, smime_product, base);
        let names = 1 + alt_names.len();
        if let Some(max) = super::values::max_names(product)
            && names > max
        {
            let at = c.alt_names.as_ref().map(Spanned::span).unwrap_or(name_span.clone());
            self.err(
                at,
                &f("alt_names"),
                &format!(
                    "{names} names (the name and {} alt_names), but {product} takes at most {max}",
                    names - 1
                ),
            );
        }
        let lifetime_months = match pick!(lifetime_months) {
            Some((m, field)) => match *m.get_ref() {
                12 | 24 => *m.get_ref() as u32,
                other => {
                    self.err(
                        m.span(),
                        &field,
                        &format!("{other} is not an order term; use 12 or 24 (months)"),
                    );
                    defaults::LIFETIME_MONTHS
                }
            },
            None => defaults::LIFETIME_MONTHS,
        };
        let software: &'static str = match pick!(software) {
            Some((s, field)) => match KNOWN_SOFTWARE.iter().find(|k| **k == s.get_ref()) {
                Some(known) => known,
                None => {
                    self.err(
                        s.span(),
                        &field,
                        &format!(
                            "unknown software '{}' (use one of {})",
                            s.get_ref(),
                            KNOWN_SOFTWARE.join(", ")
                        ),
                    );
                    defaults::SOFTWARE
                }
            },
            None => defaults::SOFTWARE,
        };
        let key = match pick!(key) {
            Some((k, field)) => KeyKind::parse(k.get_ref()).unwrap_or_else(|| {
                let names: Vec<&str> = KeyKind::NAMES.iter().map(|(n, _)| *n).collect();
                self.err(
                    k.span(),
                    &field,
                    &format!("unknown key type '{}' (use one of {})", k.get_ref(), names.join(", ")),
                );
                defaults::KEY
            }),
            None => defaults::KEY,
        };
        let mut contact = |which: Option<(Spanned<ContactSpec>, String)>, what: &str| match which {
            Some((c, field)) => {
                if let ContactSpec::Id(id) = c.get_ref()
                    && *id <= 0
                {
                    self.err(c.span(), &field, "a contact id must be a positive number");
                }
                Some(c.into_inner())
            }
            None => {
                self.err(
                    span.clone(),
                    &f(what),
                    &format!("no {what}: set it in [defaults] or here (an id, or a table of contact details)"),
                );
                None
            }
        };
        let admin_contact = contact(pick!(admin_contact), "admin_contact");
        let technical_contact = contact(pick!(technical_contact), "technical_contact");
        let dns = match pick!(dns) {
            Some((m, field)) => match m.get_ref().as_str() {
                "autodns" => DnsMode::Autodns,
                "hook" => DnsMode::Hook,
                other => {
                    self.err(
                        m.span(),
                        &field,
                        &format!("'{other}' is not a DNS mode; use \"autodns\" or \"hook\""),
                    );
                    defaults::DNS_MODE
                }
            },
            None => defaults::DNS_MODE,
        };
        let dns_hook = match pick!(dns_hook) {
            // A dns_hook of the certificate's own beside dns = "autodns" is never run.
            Some((h, field)) if dns == DnsMode::Autodns => {
                if c.dns_hook.is_some() {
                    self.warn(
                        h.span(),
                        &field,
                        WarningKind::NoEffect,
                        "is never run: the certificate has dns = \"autodns\" (AutoDNS publishes the record); remove it or set dns = \"hook\"",
                    );
                }
                Default::default()
            }
            Some((h, field)) => self.command(h, &field, base),
            None => Default::default(),
        };
        if dns == DnsMode::Hook && dns_hook.is_empty() {
            self.err(span.clone(), &f("dns_hook"), "dns = \"hook\" needs a dns_hook command");
        }
        let validation = self.validation(&c, d, &f, &span, &name, &alt_names, smime_product, base);
        // `reload = []` says "no reload" as leaving it out does (e.g. to override a default).
        let reload = match pick!(reload) {
            Some((h, _)) if h.get_ref().is_empty() => Default::default(),
            Some((h, field)) => self.command(h, &field, base),
            None => Default::default(),
        };
        let renew_before = match pick!(renew_before) {
            Some((r, field)) => match parse_renew_before(r.get_ref()) {
                Ok(v) => v,
                Err(e) => {
                    self.err(r.span(), &field, &e);
                    defaults::RENEW_BEFORE
                }
            },
            None => defaults::RENEW_BEFORE,
        };
        let renew_term = pick!(renew_term)
            .map(|(b, _)| *b.get_ref())
            .unwrap_or(defaults::RENEW_TERM);
        let max_paid_orders = match pick!(max_paid_orders) {
            Some((m, field)) => match u32::try_from(*m.get_ref()) {
                Ok(v) if (1..=10).contains(&v) => v,
                _ => {
                    self.err(m.span(), &field, "must be between 1 and 10");
                    defaults::MAX_PAID_ORDERS
                }
            },
            None => defaults::MAX_PAID_ORDERS,
        };
        let hook_timeout = match pick!(hook_timeout) {
            Some((t, field)) => self.duration(&Some(t), &field, defaults::HOOK_TIMEOUT),
            None => defaults::HOOK_TIMEOUT,
        };
        let certificate_id = match &c.certificate_id {
            Some(id) if *id.get_ref() <= 0 => {
                self.err(
                    id.span(),
                    &f("certificate_id"),
                    "must be the positive id of an order of the account",
                );
                None
            }
            Some(id) => Some(*id.get_ref()),
            None => None,
        };
        let new_orders = match pick!(new_orders) {
            Some((v, field)) => match v.get_ref().as_str() {
                "allow" => true,
                "deny" => false,
                other => {
                    self.err(
                        v.span(),
                        &field,
                        &format!("'{other}' is neither \"allow\" nor \"deny\""),
                    );
                    true
                }
            },
            None => defaults::NEW_ORDERS,
        };
        let mut key_access = crate::store::KeyAccess::default();
        if let Some((o, field)) = pick!(key_owner) {
            match self.id_of(false, o.get_ref()) {
                Ok(uid) => key_access.uid = Some(uid),
                Err(e) => self.err(o.span(), &field, &format!("{e} (a user name or uid)")),
            }
        }
        if let Some((g, field)) = pick!(key_group) {
            match self.id_of(true, g.get_ref()) {
                Ok(gid) => key_access.gid = Some(gid),
                Err(e) => self.err(g.span(), &field, &format!("{e} (a group name or gid)")),
            }
        }
        if let Some((m, field)) = pick!(key_mode) {
            match u32::from_str_radix(m.get_ref().trim(), 8) {
                Ok(mode @ (0o600 | 0o640 | 0o400 | 0o440)) => key_access.mode = mode,
                _ => self.err(
                    m.span(),
                    &field,
                    &format!(
                        "'{}' is not a mode for a private key; use \"0600\", \"0640\", \"0400\" or \"0440\" (never readable by others, never writable by the group)",
                        m.get_ref()
                    ),
                ),
            }
        }
        let serve_check = match pick!(serve_check) {
            Some((list, field)) => {
                let mut addresses = Vec::new();
                for a in list.get_ref() {
                    match check_address(a) {
                        Ok(()) if !addresses.contains(a) => addresses.push(a.clone()),
                        Ok(()) => {}
                        Err(e) => self.err(list.span(), &field, &e),
                    }
                }
                addresses.into()
            }
            None => Default::default(),
        };
        let serve_check_timeout = match pick!(serve_check_timeout) {
            Some((t, field)) => {
                let span = t.span();
                let d = self.duration(&Some(t), &field, defaults::SERVE_CHECK_TIMEOUT);
                if !(std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(600)).contains(&d) {
                    self.err(
                        span,
                        &field,
                        "must be between 1s and 10m (each address must hand out the new certificate twice, 200 ms apart)",
                    );
                }
                d
            }
            None => defaults::SERVE_CHECK_TIMEOUT,
        };
        let serve_check_interval = match pick!(serve_check_interval) {
            Some((t, field)) => self.duration(&Some(t), &field, defaults::SERVE_CHECK_INTERVAL),
            None => defaults::SERVE_CHECK_INTERVAL,
        };
        if self.errors.len() > before {
            return None;
        }
        let settings = CertSettings {
            product,
            lifetime_months,
            software,
            key,
            admin_contact: admin_contact?,
            technical_contact: technical_contact?,
            dns,
            dns_hook,
            validation,
            smime,
            reload,
            renew_before,
            renew_term,
            max_paid_orders,
            hook_timeout,
            key_access,
            new_orders,
            serve_check,
            serve_check_timeout,
            serve_check_interval,
        };
        let settings = match &self.last_settings {
            Some(last) if **last == settings => last.clone(),
            _ => {
                let shared = std::sync::Arc::new(settings);
                self.last_settings = Some(shared.clone());
                shared
            }
        };
        Some(CertConfig {
            name,
            alt_names,
            certificate_id,
            settings,
        })
    }
}

impl Validator<'_> {
    /// `validation` and the keys of its modes: `webroot`, `file_hook` and `file_check_address`
    /// for `file`, `approver_email` for `email`. A key of another mode set in the certificate's
    /// own table is refused (it would silently do nothing).
    #[allow(clippy::too_many_arguments)]
    fn validation(
        &mut self,
        c: &RawSettings,
        d: &RawSettings,
        f: &dyn Fn(&str) -> String,
        span: &Range<usize>,
        name: &str,
        alt_names: &[String],
        smime: bool,
        base: &Path,
    ) -> Validation {
        // An S/MIME certificate's mailbox approves it: nothing to choose.
        if smime {
            let own = [
                ("validation", c.validation.as_ref().map(Spanned::span)),
                ("webroot", c.webroot.as_ref().map(Spanned::span)),
                ("file_hook", c.file_hook.as_ref().map(Spanned::span)),
                ("file_check_address", c.file_check_address.as_ref().map(Spanned::span)),
                ("approver_email", c.approver_email.as_ref().map(Spanned::span)),
            ];
            for (key, at) in own {
                if let Some(at) = at {
                    self.err(
                        at,
                        &f(key),
                        "an S/MIME certificate is approved by its own mailbox: remove this key",
                    );
                }
            }
            return Validation::Email {
                approver: name.to_string(),
            };
        }
        macro_rules! pick {
            ($field:ident) => {
                c.$field.clone().map(|v| (v, f(stringify!($field)))).or_else(|| {
                    d.$field
                        .clone()
                        .map(|v| (v, format!("defaults.{}", stringify!($field))))
                })
            };
        }
        let mode: &str = match pick!(validation) {
            Some((v, field)) => match v.get_ref().as_str() {
                "dns" => "dns",
                "file" => "file",
                "email" => "email",
                other => {
                    self.err(
                        v.span(),
                        &field,
                        &format!("'{other}' is not a validation; use \"dns\", \"file\" or \"email\""),
                    );
                    "dns"
                }
            },
            None => "dns",
        };
        // Keys of another mode, set in this table itself, do nothing: said, not passed over.
        let own = [
            ("webroot", c.webroot.as_ref().map(Spanned::span), "file"),
            ("file_hook", c.file_hook.as_ref().map(Spanned::span), "file"),
            (
                "file_check_address",
                c.file_check_address.as_ref().map(Spanned::span),
                "file",
            ),
            ("approver_email", c.approver_email.as_ref().map(Spanned::span), "email"),
        ];
        for (key, at, wants) in own {
            if let Some(at) = at
                && wants != mode
            {
                self.err(
                    at,
                    &f(key),
                    &format!("is only used with validation = \"{wants}\" (this certificate has \"{mode}\")"),
                );
            }
        }
        let mut names = vec![name.to_string()];
        names.extend(alt_names.iter().cloned());
        match mode {
            "file" => {
                let hook = match pick!(file_hook) {
                    Some((h, field)) => self.command(h, &field, base),
                    None => Default::default(),
                };
                let mut webroots = Vec::new();
                match pick!(webroot) {
                    Some(_) if !hook.is_empty() => self.err(
                        span.clone(),
                        &f("webroot"),
                        "set webroot or file_hook, not both: the file goes to one of them",
                    ),
                    Some((w, field)) => {
                        let at = w.span();
                        let mut put = |this: &mut Self, n: &str, p: &Path| {
                            if p.is_absolute() {
                                webroots.push((n.to_string(), p.to_path_buf()));
                            } else {
                                this.err(
                                    at.clone(),
                                    &field,
                                    &format!("'{}' is not an absolute path such as /var/www/example", p.display()),
                                );
                            }
                        };
                        match w.get_ref() {
                            Webroot::One(p) => {
                                for n in &names {
                                    put(self, n, p);
                                }
                            }
                            Webroot::PerName(table) => {
                                for (n, p) in table {
                                    let n = n.to_ascii_lowercase();
                                    if names.contains(&n) {
                                        put(self, &n, p);
                                    } else {
                                        self.err(
                                            at.clone(),
                                            &field,
                                            &format!("'{n}' is not one of the certificate's names ({})", names.join(", ")),
                                        );
                                    }
                                }
                                let missing: Vec<&String> = names
                                    .iter()
                                    .filter(|n| !table.keys().any(|k| k.eq_ignore_ascii_case(n)))
                                    .collect();
                                if !missing.is_empty() {
                                    let missing: Vec<&str> = missing.iter().map(|n| n.as_str()).collect();
                                    self.err(at.clone(), &field, &format!("has no web root for {}", missing.join(", ")));
                                }
                            }
                        }
                    }
                    None if hook.is_empty() => self.err(
                        span.clone(),
                        &f("webroot"),
                        "validation = \"file\" needs a webroot (the directory the web server serves for the name) or a file_hook",
                    ),
                    None => {}
                }
                let check_address = match pick!(file_check_address) {
                    Some((a, field)) => {
                        if let Err(e) = check_http_address(a.get_ref()) {
                            self.err(a.span(), &field, &e);
                        }
                        Some(a.into_inner())
                    }
                    None => None,
                };
                Validation::File(FileValidation {
                    webroots,
                    hook,
                    check_address,
                })
            }
            "email" => match pick!(approver_email) {
                Some((a, field)) => {
                    let addr = a.get_ref().to_ascii_lowercase();
                    let ok = addr
                        .split_once('@')
                        .is_some_and(|(local, domain)| is_mailbox_local(local) && is_hostname(domain));
                    if !ok {
                        self.err(
                            a.span(),
                            &field,
                            &format!("'{}' is not an e-mail address such as admin@example.com", a.get_ref()),
                        );
                    }
                    Validation::Email { approver: addr }
                }
                None => {
                    self.err(
                        span.clone(),
                        &f("approver_email"),
                        "validation = \"email\" needs an approver_email (one of the addresses the CA offers for the name: admin@, administrator@, hostmaster@, webmaster@ or postmaster@ of its domain; an address not offered is refused with the list before anything is ordered)",
                    );
                    Validation::Dns
                }
            },
            _ => Validation::Dns,
        }
    }

    /// `smime = { first_name, last_name, organization_unit, password_file, p12_password_file }`:
    /// required for an S/MIME product, refused in the table of any other; the password files
    /// are read as the API's is (a regular file, 0600, no link).
    fn smime(
        &mut self,
        c: &RawSettings,
        d: &RawSettings,
        f: &dyn Fn(&str) -> String,
        span: &Range<usize>,
        smime_product: bool,
        base: &Path,
    ) -> Option<std::sync::Arc<Smime>> {
        if !smime_product {
            if let Some(t) = &c.smime {
                self.err(
                    t.span(),
                    &f("smime"),
                    "is only used with an S/MIME product (GLOBALSIGN_PERSONALSIGN_1)",
                );
            }
            return None;
        }
        let (t, field) = match (&c.smime, &d.smime) {
            (Some(t), _) => (t.clone(), f("smime")),
            (None, Some(t)) => (t.clone(), "defaults.smime".to_string()),
            (None, None) => {
                self.err(
                    span.clone(),
                    &f("smime"),
                    "an S/MIME certificate needs smime = { first_name, last_name, password_file, p12_password_file } (organization_unit is optional)",
                );
                return None;
            }
        };
        let at = t.span();
        let raw = t.into_inner();
        let text = |this: &mut Self, key: &str, v: &str, required: bool| {
            let ok = (!required || !v.trim().is_empty()) && v.len() <= 64 && !v.chars().any(char::is_control);
            if !ok {
                this.err(
                    at.clone(),
                    &format!("{field}.{key}"),
                    "must be 1 to 64 printable characters",
                );
            }
        };
        text(self, "first_name", &raw.first_name, true);
        text(self, "last_name", &raw.last_name, true);
        if let Some(ou) = &raw.organization_unit {
            text(self, "organization_unit", ou, true);
        }
        let secret = |this: &mut Self, key: &str, p: &Path| {
            let path = if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
            match super::validate::read_password_file(&path) {
                Ok(s) => Some(super::Secret::new(s)),
                Err(e) => {
                    this.err(at.clone(), &format!("{field}.{key}"), &e);
                    None
                }
            }
        };
        let password = secret(self, "password_file", &raw.password_file);
        let p12_password = secret(self, "p12_password_file", &raw.p12_password_file);
        Some(std::sync::Arc::new(Smime {
            first_name: raw.first_name,
            last_name: raw.last_name,
            organization_unit: raw.organization_unit,
            password: password?,
            p12_password: p12_password?,
        }))
    }

    /// The uid (or, for `group`, the gid) a key owner names, looked up once per name.
    fn id_of(&mut self, group: bool, given: &str) -> Result<u32, String> {
        let key = (group, given.to_string());
        if let Some(found) = self.ids.get(&key) {
            return found.clone();
        }
        let found = if group {
            lookup_id(given, |n| {
                nix::unistd::Group::from_name(n).map(|g| g.map(|g| g.gid.as_raw()))
            })
        } else {
            lookup_id(given, |n| {
                nix::unistd::User::from_name(n).map(|u| u.map(|u| u.uid.as_raw()))
            })
        };
        self.ids.insert(key, found.clone());
        found
    }
}

/// A user or group given by number, or by name through the system's database (`find`).
fn lookup_id(given: &str, find: impl Fn(&str) -> nix::Result<Option<u32>>) -> Result<u32, String> {
    let given = given.trim();
    if let Ok(id) = given.parse::<u32>() {
        return Ok(id);
    }
    match find(given) {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(format!("there is no '{given}' on this host")),
        Err(e) => Err(format!("cannot look up '{given}': {e}")),
    }
}

/// Whether `a` is an address the served check can connect to: `host:port`, `IPv4:port` or
/// `[IPv6]:port`.
fn check_address(a: &str) -> Result<(), String> {
    let bad = || format!("'{a}' is not an address such as 127.0.0.1:443, [::1]:443 or web1.example.com:443");
    if let Ok(addr) = a.parse::<std::net::SocketAddr>() {
        return if addr.port() > 0 { Ok(()) } else { Err(bad()) };
    }
    let (host, port) = a.rsplit_once(':').ok_or_else(bad)?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 && is_hostname(host) && !host.starts_with("*.") => Ok(()),
        _ => Err(bad()),
    }
}

/// Whether `a` is where a file check may connect: `host:port`, `IPv4:port` or `[IPv6]:port`.
fn check_http_address(a: &str) -> Result<(), String> {
    check_address(a).map_err(|_| format!("'{a}' is not an address such as 127.0.0.1:80 or web1.example.com:80"))
}

/// The part of an approver address before the `@`: the characters a mailbox name is written in.
fn is_mailbox_local(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= 64
        && local.chars().all(|c| c.is_ascii_alphanumeric() || ".-_+".contains(c))
        && !local.starts_with('.')
        && !local.ends_with('.')
}
