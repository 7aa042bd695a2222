//! A small XML writer for the XDS request: every attribute value and text goes through
//! [`escape`], so a patient's name or a title can never break the envelope's structure.

/// Builds an XML document element by element; `open`/`close` must pair (the writer keeps
/// the stack, so `close` needs no name).
#[derive(Default)]
pub struct Xml {
    out: String,
    stack: Vec<String>,
}

impl Xml {
    pub fn new() -> Self {
        Self {
            out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"),
            stack: Vec::new(),
        }
    }

    fn start(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("=\"");
            self.out.push_str(&escape(v));
            self.out.push('"');
        }
    }

    /// `<name attrs>`, closed later by [`Xml::close`].
    pub fn open(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start(name, attrs);
        self.out.push('>');
        self.stack.push(name.to_string());
        self
    }

    pub fn close(&mut self) -> &mut Self {
        if let Some(name) = self.stack.pop() {
            self.out.push_str("</");
            self.out.push_str(&name);
            self.out.push('>');
        }
        self
    }

    /// `<name attrs/>`.
    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start(name, attrs);
        self.out.push_str("/>");
        self
    }

    /// `<name attrs>text</name>`.
    pub fn leaf(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) -> &mut Self {
        self.open(name, attrs);
        self.out.push_str(&escape(text));
        self.close()
    }

    /// Markup inserted as it is: a signed SAML assertion must keep its exact bytes. The
    /// caller checks it is well-formed XML first.
    pub fn raw(&mut self, markup: &str) -> &mut Self {
        let markup = markup.trim_start();
        let markup = match markup.strip_prefix("<?xml") {
            Some(rest) => rest.split_once("?>").map_or("", |(_, body)| body),
            None => markup,
        };
        self.out.push_str(markup.trim());
        self
    }

    /// The document, every element closed.
    pub fn finish(mut self) -> String {
        while !self.stack.is_empty() {
            self.close();
        }
        self.out
    }
}

/// Text or attribute value escaped; characters XML 1.0 cannot carry at all (most C0
/// controls) are dropped rather than written.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_elements_closed() {
        let mut x = Xml::new();
        x.open("a", &[("v", "x\"<&>'")])
            .leaf("b", &[], "Dupont & <fils>\u{1}")
            .empty("c", &[("k", "1")]);
        let text = x.finish();
        assert_eq!(
            text,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a v=\"x&quot;&lt;&amp;&gt;&apos;\">\
             <b>Dupont &amp; &lt;fils&gt;</b><c k=\"1\"/></a>"
        );
        assert!(roxmltree::Document::parse(&text).is_ok());
    }
}
