//! Conditions (`when:`): a small boolean language over paths, compiled once.
//!
//! ```text
//! PID-32                      the path has a non-empty value
//! PID-32 = 'VALI'             one of its values is VALI (quotes ' or ")
//! PID-32 != 'VALI'            none of its values is VALI
//! .5 in ('PI', 'MR')          one of its values is in the list
//! not PV1-2 and (ZBE-4 = 'INSERT' or ZBE-4 = 'UPDATE')
//! ```
//!
//! `not` binds tighter than `and`, which binds tighter than `or`.

use crate::input::{InputPath, Scope, Syntax};

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Valued(InputPath),
    Equals(InputPath, String),
    NotEquals(InputPath, String),
    In(InputPath, Vec<String>),
    Not(Box<Cond>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
}

/// A parse error at a byte offset of the expression.
#[derive(Debug, Clone, PartialEq)]
pub struct CondError {
    pub offset: usize,
    pub message: String,
}

impl Cond {
    pub fn parse(text: &str) -> Result<Cond, CondError> {
        Self::parse_as(text, None)
    }

    /// With the syntax of the paths when the mapping's input kind is known (FHIR paths look
    /// like XML ones).
    pub fn parse_as(text: &str, syntax: Option<Syntax>) -> Result<Cond, CondError> {
        let tokens = lex(text)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            end: text.len(),
            syntax,
        };
        let c = p.or()?;
        match p.tokens.get(p.pos) {
            None => Ok(c),
            Some((at, t)) => Err(CondError {
                offset: *at,
                message: format!("unexpected `{}`; expected `and`, `or` or the end", t.show()),
            }),
        }
    }

    pub fn holds(&self, scope: &Scope<'_>) -> bool {
        let any = |p: &InputPath, test: &dyn Fn(&str) -> bool| scope.any(p, test);
        match self {
            Cond::Valued(p) => scope.has_value(p),
            Cond::Equals(p, v) => any(p, &|t| t == v),
            Cond::NotEquals(p, v) => !any(p, &|t| t == v),
            Cond::In(p, vs) => any(p, &|t| vs.iter().any(|v| v == t)),
            Cond::Not(c) => !c.holds(scope),
            Cond::And(cs) => cs.iter().all(|c| c.holds(scope)),
            Cond::Or(cs) => cs.iter().any(|c| c.holds(scope)),
        }
    }

    /// Every path the condition reads, for checks at compile time.
    pub fn paths(&self) -> Vec<&InputPath> {
        match self {
            Cond::Valued(p) | Cond::Equals(p, _) | Cond::NotEquals(p, _) | Cond::In(p, _) => {
                vec![p]
            }
            Cond::Not(c) => c.paths(),
            Cond::And(cs) | Cond::Or(cs) => cs.iter().flat_map(|c| c.paths()).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Literal(String),
    Eq,
    Ne,
    Open,
    Close,
    Comma,
}

impl Token {
    fn show(&self) -> String {
        match self {
            Token::Word(w) => w.clone(),
            Token::Literal(l) => format!("'{l}'"),
            Token::Eq => "=".into(),
            Token::Ne => "!=".into(),
            Token::Open => "(".into(),
            Token::Close => ")".into(),
            Token::Comma => ",".into(),
        }
    }
}

fn lex(text: &str) -> Result<Vec<(usize, Token)>, CondError> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(at, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | ',' | '=' => {
                chars.next();
                out.push((
                    at,
                    match c {
                        '(' => Token::Open,
                        ')' => Token::Close,
                        ',' => Token::Comma,
                        _ => Token::Eq,
                    },
                ));
            }
            '!' => {
                chars.next();
                if chars.next_if(|&(_, c)| c == '=').is_none() {
                    return Err(CondError {
                        offset: at,
                        message: "`!` must be followed by `=`; write `not` to negate".into(),
                    });
                }
                out.push((at, Token::Ne));
            }
            '\'' | '"' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, q)) if q == c => break,
                        Some((_, ch)) => value.push(ch),
                        None => {
                            return Err(CondError {
                                offset: at,
                                message: "unterminated text: a closing quote is missing".into(),
                            });
                        }
                    }
                }
                out.push((at, Token::Literal(value)));
            }
            _ => {
                let mut word = String::new();
                // `[` ... `]` belongs to the path, quotes and `=` included (OBX[*]-5,
                // `id[@root='1.2.3']/@extension`).
                let (mut depth, mut quote) = (0usize, None);
                while let Some(&(_, ch)) = chars.peek() {
                    match (quote, ch) {
                        (Some(q), ch) if ch == q => quote = None,
                        (Some(_), _) => {}
                        (None, '\'' | '"') if depth > 0 => quote = Some(ch),
                        (None, '[') => depth += 1,
                        (None, ']') => depth = depth.saturating_sub(1),
                        // `text()` in an XML path, `resolve()` in a FHIR one, are no group.
                        (None, '(') if word.ends_with("text") || word.ends_with("resolve") => {}
                        (None, ')') if word.ends_with("text(") || word.ends_with("resolve(") => {}
                        (None, ch)
                            if depth == 0
                                && (ch.is_whitespace()
                                    || matches!(ch, '(' | ')' | ',' | '=' | '!' | '\'' | '"')) =>
                        {
                            break;
                        }
                        _ => {}
                    }
                    word.push(ch);
                    chars.next();
                }
                out.push((at, Token::Word(word)));
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    end: usize,
    syntax: Option<Syntax>,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |(a, _)| *a)
    }

    fn keyword(&mut self, k: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w == k) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, CondError> {
        Err(CondError {
            offset: self.at(),
            message: message.into(),
        })
    }

    fn or(&mut self) -> Result<Cond, CondError> {
        let mut items = vec![self.and()?];
        while self.keyword("or") {
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one")
        } else {
            Cond::Or(items)
        })
    }

    fn and(&mut self) -> Result<Cond, CondError> {
        let mut items = vec![self.not()?];
        while self.keyword("and") {
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one")
        } else {
            Cond::And(items)
        })
    }

    fn not(&mut self) -> Result<Cond, CondError> {
        if self.keyword("not") {
            return Ok(Cond::Not(Box::new(self.not()?)));
        }
        self.atom()
    }

    fn literal(&mut self) -> Result<String, CondError> {
        match self.peek().cloned() {
            Some(Token::Literal(l)) => {
                self.pos += 1;
                Ok(l)
            }
            _ => self.fail("a quoted value is expected here ('VALI')"),
        }
    }

    fn atom(&mut self) -> Result<Cond, CondError> {
        match self.peek().cloned() {
            Some(Token::Open) => {
                self.pos += 1;
                let c = self.or()?;
                if self.peek() != Some(&Token::Close) {
                    return self.fail("`)` expected");
                }
                self.pos += 1;
                Ok(c)
            }
            Some(Token::Word(w)) => {
                let at = self.at();
                let path = InputPath::parse_as(&w, self.syntax).map_err(|message| CondError {
                    offset: at,
                    message,
                })?;
                self.pos += 1;
                match self.peek() {
                    Some(Token::Eq) => {
                        self.pos += 1;
                        Ok(Cond::Equals(path, self.literal()?))
                    }
                    Some(Token::Ne) => {
                        self.pos += 1;
                        Ok(Cond::NotEquals(path, self.literal()?))
                    }
                    Some(Token::Word(k)) if k == "in" => {
                        self.pos += 1;
                        if self.peek() != Some(&Token::Open) {
                            return self.fail("`in` takes a list: ('A', 'B')");
                        }
                        self.pos += 1;
                        let mut values = vec![self.literal()?];
                        while self.peek() == Some(&Token::Comma) {
                            self.pos += 1;
                            values.push(self.literal()?);
                        }
                        if self.peek() != Some(&Token::Close) {
                            return self.fail("`)` expected at the end of the list");
                        }
                        self.pos += 1;
                        Ok(Cond::In(path, values))
                    }
                    _ => Ok(Cond::Valued(path)),
                }
            }
            Some(t) => self.fail(format!("unexpected `{}`; a path is expected", t.show())),
            None => self.fail("a condition is expected"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> InputPath {
        InputPath::parse(s).unwrap()
    }

    #[test]
    fn grammar() {
        assert_eq!(
            Cond::parse("PID-32 = 'VALI'").unwrap(),
            Cond::Equals(p("PID-32"), "VALI".into())
        );
        assert_eq!(
            Cond::parse("not PV1-2 and (ZBE-4 = \"A\" or .5 in ('PI', 'MR'))").unwrap(),
            Cond::And(vec![
                Cond::Not(Box::new(Cond::Valued(p("PV1-2")))),
                Cond::Or(vec![
                    Cond::Equals(p("ZBE-4"), "A".into()),
                    Cond::In(p(".5"), vec!["PI".into(), "MR".into()]),
                ]),
            ])
        );
        let e = Cond::parse("PID-32 = VALI").unwrap_err();
        assert_eq!(e.offset, 9);
        assert!(Cond::parse("PID-32 ! 'x'").is_err());
        assert!(Cond::parse("(PID-3").is_err());
        assert!(Cond::parse("PID-3 'x'").is_err());
        assert!(Cond::parse("pid-3").is_err());
        // XML paths keep their predicates whole, quotes and `=` included.
        assert_eq!(
            Cond::parse("id[@root='1.2.3'] and text() != 'x'").unwrap(),
            Cond::And(vec![
                Cond::Valued(p("id[@root='1.2.3']")),
                Cond::NotEquals(p("text()"), "x".into()),
            ])
        );
    }
}
