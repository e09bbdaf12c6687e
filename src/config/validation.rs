//! A certificate's `validation` and the keys of its modes (`webroot`, `file_hook`,
//! `file_check_address` for FILE; `approver_email` for EMAIL), and an S/MIME certificate's
//! `smime` table with its password files.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::file::{RawSettings, Webroot};
use super::validate::Validator;
use super::values::is_mailbox;
use super::{FileValidation, Smime, Validation};

impl Validator<'_> {
    /// `validation` and the keys of its modes: `webroot`, `file_hook` and `file_check_address`
    /// for `file`, `approver_email` for `email`. A key of another mode set in the certificate's
    /// own table is refused (it would silently do nothing).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn validation(
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
                pick_setting!(c, d, f, $field)
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
                    if !is_mailbox(&addr) {
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
    pub(super) fn smime(
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
}

/// Whether `a` is where a file check may connect: `host:port`, `IPv4:port` or `[IPv6]:port`.
fn check_http_address(a: &str) -> Result<(), String> {
    super::certificate::check_address(a)
        .map_err(|_| format!("'{a}' is not an address such as 127.0.0.1:80 or web1.example.com:80"))
}
