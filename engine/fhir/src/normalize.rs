//! String search normalisation: FHIR string search ignores case and accents
//! (`family=bergere` finds "Bergère"), so the index keeps a folded copy.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Lower case, accents removed, ligatures split, white space collapsed.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.nfkd() {
        if is_combining_mark(c) {
            continue;
        }
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        match c {
            'œ' | 'Œ' => out.push_str("oe"),
            'æ' | 'Æ' => out.push_str("ae"),
            'ß' => out.push_str("ss"),
            _ => out.extend(c.to_lowercase()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::fold;

    #[test]
    fn folds_case_accents_and_spaces() {
        assert_eq!(fold("Bergère"), "bergere");
        assert_eq!(fold("  CÉLINE  Marie-Œdipe "), "celine marie-oedipe");
        assert_eq!(fold("ÇA"), "ca");
        assert_eq!(fold(""), "");
    }
}
