//! The XML gateway's reader: a request parsed into a small element tree (quick-xml), CDATA and
//! references resolved, comments and declarations skipped, nesting bounded.

use quick_xml::events::Event;

/// How deep a request's elements may nest.
const MAX_DEPTH: usize = 32;

/// One element of a request: its name, its text (CDATA included, trimmed) and its children.
#[derive(Debug, Default)]
pub(super) struct Element {
    pub(super) name: String,
    pub(super) text: String,
    pub(super) children: Vec<Element>,
}

impl Element {
    pub(super) fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    pub(super) fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

/// Parses an XML document into its root element: comments, declarations and processing
/// instructions skipped, entity and character references resolved, nesting bounded.
pub(super) fn parse(xml: &str) -> Result<Element, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    loop {
        let event = reader.read_event().map_err(|e| format!("not well-formed XML: {e}"))?;
        match event {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("the request nests deeper than {MAX_DEPTH} elements"));
                }
                stack.push(Element {
                    name: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                    ..Element::default()
                });
            }
            Event::Empty(e) => {
                let el = Element {
                    name: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                    ..Element::default()
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let mut el = stack.pop().ok_or("an end tag without its start")?;
                el.text = el.text.trim().to_string();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&t.decode().map_err(|e| e.to_string())?);
                }
            }
            Event::CData(t) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::GeneralRef(r) => {
                if let Some(el) = stack.last_mut() {
                    let c = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                        Some(c) => c,
                        None => match r.decode().map_err(|e| e.to_string())?.as_ref() {
                            "amp" => '&',
                            "lt" => '<',
                            "gt" => '>',
                            "quot" => '"',
                            "apos" => '\'',
                            other => return Err(format!("unknown entity &{other};")),
                        },
                    };
                    el.text.push(c);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err("the document ends inside an element".into());
    }
    root.ok_or_else(|| "the document has no element".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_read_with_cdata_entities_and_comments() {
        let r = parse("<?xml version=\"1.0\"?><request><task><code>0905</code><!-- c --><x><![CDATA[a<b]]> &amp; &#65;</x><e/></task></request>").unwrap();
        let t = r.child("task").unwrap();
        assert_eq!(t.text_of("code"), Some("0905"));
        assert_eq!(t.text_of("x"), Some("a<b & A"));
        assert!(t.child("e").is_some());
        assert!(parse("<request><task>").is_err());
        assert!(parse(&"<a>".repeat(40)).is_err());
        assert!(parse("<a>&unknown;</a>").is_err());
    }
}
