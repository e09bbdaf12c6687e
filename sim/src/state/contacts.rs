//! SSL contacts: create, inquire and search them; orders refer to them by id.

use super::query::{CONTACT_KEYS, filter_page};
use super::{ApiError, Reply, Result, State};
use crate::time::{format as ts, now};
use crate::wire::{BasicUser, Query, SslContactIn, SslContactOut, StringOrList};

impl State {
    pub fn contact_create(&mut self, owner: &BasicUser, c: SslContactIn) -> Result<Reply> {
        let required = [
            ("fname", &c.fname),
            ("lname", &c.lname),
            ("email", &c.email),
            ("phone", &c.phone),
        ];
        for (field, value) in required {
            if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                return Err(ApiError::field("400201", field, format!("{field} is required")));
            }
        }
        if let Some(country) = &c.country
            && (country.len() != 2 || !country.chars().all(|ch| ch.is_ascii_alphabetic()))
        {
            return Err(ApiError::field(
                "400201",
                "country",
                "country must be an ISO 3166 two-letter code",
            ));
        }
        let id = self.next_contact;
        self.next_contact += 1;
        let t = ts(now());
        let address_was_string = matches!(c.address, Some(StringOrList::One(_)));
        let out = SslContactOut {
            id,
            fname: c.fname,
            lname: c.lname,
            title: c.title,
            organization: c.organization,
            address: c.address.map(StringOrList::into_vec).unwrap_or_default(),
            address_was_string,
            pcode: c.pcode,
            city: c.city,
            state: c.state,
            country: c.country,
            phone: c.phone,
            fax: c.fax,
            email: c.email,
            owner: owner.clone(),
            created: t.clone(),
            updated: t,
        };
        // The create answer echoes an address sent as a string as a string (the help page's
        // answer); info, search and certificates list it.
        let mut answer = serde_json::to_value(&out).unwrap_or_default();
        if address_was_string && let Some(first) = out.address.first() {
            answer["address"] = first.clone().into();
        }
        self.contacts.insert(id, out);
        Ok(Reply::success("S400201", "Contact was created successfully.")
            .object("contact", id)
            .data([answer]))
    }

    pub fn contact_info(&self, owner: &BasicUser, id: i64) -> Result<Reply> {
        let c = self
            .contacts
            .get(&id)
            .filter(|c| &c.owner == owner)
            .ok_or_else(|| ApiError::not_found("400204", "contact", "SslContact", id))?;
        Ok(Reply::success("S400204", "Contact data were inquired successfully.")
            .object("contact", id)
            .data([c]))
    }

    pub fn contact_search(&self, owner: &BasicUser, q: &Query) -> Result<Reply> {
        let all: Vec<&SslContactOut> = self.contacts.values().filter(|c| &c.owner == owner).collect();
        let (total, found) = filter_page(all, q, CONTACT_KEYS, |c, key| match key {
            "id" => Some(c.id.to_string()),
            "fname" => c.fname.clone(),
            "lname" => c.lname.clone(),
            "title" => c.title.clone(),
            "email" => c.email.clone(),
            "organization" => c.organization.clone(),
            "address" => (!c.address.is_empty()).then(|| c.address.join(", ")),
            "pcode" => c.pcode.clone(),
            "city" => c.city.clone(),
            "state" => c.state.clone(),
            "country" => c.country.clone(),
            "phone" => c.phone.clone(),
            "fax" => c.fax.clone(),
            "created" => Some(c.created.clone()),
            "updated" => Some(c.updated.clone()),
            _ => None,
        })?;
        Ok(Reply::success("S400205", "Contact list was inquired successfully.")
            .data(found)
            .summary("SslContact", total))
    }

    /// The id of the contact an order names, if it is one of the account's.
    pub(super) fn contact_ok(&self, owner: &BasicUser, c: &Option<SslContactIn>) -> Option<i64> {
        let id = c.as_ref()?.id?;
        self.contacts.get(&id).filter(|c| &c.owner == owner).map(|c| c.id)
    }
}
