//! One `[[certificate]]` table checked into a [`CertConfig`], each setting its own or the
//! `[defaults]` one: names, product and its name limit, term, software, key, contacts, DNS mode
//! and hook, reload, renewal, spending (`max_paid_orders`, `new_orders`, `certificate_id`),
//! hook timeout, and who may read the installed key.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::defaults;
use super::file::RawSettings;
use super::validate::Validator;
use super::values::{
    KNOWN_PRODUCTS, KNOWN_SOFTWARE, MAX_NAME, SMIME_PRODUCTS, is_hostname, is_mailbox, parse_renew_before,
};
use super::{CertConfig, CertSettings, ContactSpec, DnsMode, KeyKind, WarningKind};

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
                pick_setting!(c, d, f, $field)
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
pub(super) fn check_address(a: &str) -> Result<(), String> {
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
