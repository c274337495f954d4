//! A small, non-recursive RON tokenizer used for two things ron itself does not give us:
//! rejecting deeply nested input before the (recursive) parser sees it, and finding the
//! line of a value named by a [`FieldPath`] for errors found after parsing.
//!
//! It knows RON's comments (`//`, nested `/* */`), strings (escaped, raw `r#"…"#`, byte),
//! and character literals, so brackets inside them are not counted. Anything it does not
//! understand is passed over as a one-character token: ron reports real syntax errors.

use crate::path::{FieldPath, Segment};

/// A position in the text: 1-based line and column (columns count characters, like ron).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenKind<'a> {
    Open(char),
    Close(char),
    Comma,
    Colon,
    /// Identifier or number.
    Word(&'a str),
    /// String literal; the text between the quotes, escapes left as written.
    Str(&'a str),
    /// Anything else (a character literal, `#`, `!`, …).
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    pub kind: TokenKind<'a>,
    pub at: Position,
}

/// Iterator over the tokens of a text.
pub(crate) struct Lexer<'a> {
    text: &'a str,
    offset: usize,
    line: usize,
    column: usize,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self {
            text,
            offset: 0,
            line: 1,
            column: 1,
        }
    }

    fn rest(&self) -> &'a str {
        self.text.get(self.offset..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        // ASCII (nearly every byte of a configuration) without decoding UTF-8.
        match self.text.as_bytes().get(self.offset) {
            Some(&b) if b.is_ascii() => Some(char::from(b)),
            Some(_) => self.rest().chars().next(),
            None => None,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.offset += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn bump_n(&mut self, n: usize) {
        for _ in 0..n {
            if self.bump().is_none() {
                break;
            }
        }
    }

    fn here(&self) -> Position {
        Position {
            line: self.line,
            column: self.column,
        }
    }

    /// Skips whitespace and comments.
    fn skip_trivia(&mut self) {
        loop {
            // Runs of ASCII blanks (indentation, line ends) byte by byte.
            while let Some(&b) = self.text.as_bytes().get(self.offset) {
                match b {
                    b'\n' => {
                        self.line += 1;
                        self.column = 1;
                    }
                    b' ' | b'\t' | b'\r' => self.column += 1,
                    _ => break,
                }
                self.offset += 1;
            }
            let rest = self.rest();
            if rest.starts_with("//") {
                while let Some(c) = self.bump() {
                    if c == '\n' {
                        break;
                    }
                }
            } else if rest.starts_with("/*") {
                self.bump_n(2);
                let mut level = 1usize;
                while level > 0 {
                    let rest = self.rest();
                    if rest.is_empty() {
                        return;
                    } else if rest.starts_with("/*") {
                        level += 1;
                        self.bump_n(2);
                    } else if rest.starts_with("*/") {
                        level -= 1;
                        self.bump_n(2);
                    } else {
                        self.bump();
                    }
                }
            } else if self.peek().is_some_and(char::is_whitespace) {
                self.bump();
            } else {
                return;
            }
        }
    }

    /// At an escaped string's opening quote: consumes it and returns its contents.
    fn escaped_string(&mut self) -> &'a str {
        self.bump(); // the opening quote
        let start = self.offset;
        loop {
            match self.peek() {
                None => return self.text.get(start..).unwrap_or(""),
                Some('"') => {
                    let end = self.offset;
                    self.bump();
                    return self.text.get(start..end).unwrap_or("");
                }
                Some('\\') => {
                    self.bump();
                    self.bump();
                }
                Some(_) => {
                    self.bump();
                }
            }
        }
    }

    /// At `r`, followed by `hashes` hashes and a quote: consumes the raw string.
    fn raw_string(&mut self, hashes: usize) -> &'a str {
        self.bump_n(hashes + 2); // r, the hashes, the quote
        let start = self.offset;
        let closing: String = std::iter::once('"')
            .chain(std::iter::repeat_n('#', hashes))
            .collect();
        match self.rest().find(&closing) {
            Some(len) => {
                let contents = self.text.get(start..start + len).unwrap_or("");
                let chars = contents.chars().count() + closing.chars().count();
                self.bump_n(chars);
                contents
            }
            None => {
                let contents = self.rest();
                self.bump_n(contents.chars().count());
                contents
            }
        }
    }

    /// The number of hashes of a raw string starting at `rest` (which begins with `r`).
    fn raw_string_hashes(rest: &str) -> Option<usize> {
        let after_r = rest.strip_prefix('r')?;
        let hashes = after_r.chars().take_while(|&c| c == '#').count();
        after_r[hashes..].starts_with('"').then_some(hashes)
    }

    fn char_literal(&mut self) {
        self.bump(); // the opening quote
        loop {
            match self.bump() {
                None | Some('\'') | Some('\n') => return,
                Some('\\') => {
                    self.bump();
                }
                Some(_) => {}
            }
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '+' || c == '-'
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        self.skip_trivia();
        let at = self.here();
        let rest = self.rest();
        let c = rest.chars().next()?;
        let kind = match c {
            '(' | '[' | '{' => {
                self.bump();
                TokenKind::Open(c)
            }
            ')' | ']' | '}' => {
                self.bump();
                TokenKind::Close(c)
            }
            ',' => {
                self.bump();
                TokenKind::Comma
            }
            ':' => {
                self.bump();
                TokenKind::Colon
            }
            '"' => TokenKind::Str(self.escaped_string()),
            '\'' => {
                self.char_literal();
                TokenKind::Other
            }
            'b' if rest.starts_with("b\"") => {
                self.bump();
                TokenKind::Str(self.escaped_string())
            }
            'b' if Self::raw_string_hashes(&rest[1..]).is_some() => {
                let hashes = Self::raw_string_hashes(&rest[1..]).unwrap_or(0);
                self.bump();
                TokenKind::Str(self.raw_string(hashes))
            }
            'r' if Self::raw_string_hashes(rest).is_some() => {
                let hashes = Self::raw_string_hashes(rest).unwrap_or(0);
                TokenKind::Str(self.raw_string(hashes))
            }
            'r' if rest.starts_with("r#") => {
                // raw identifier r#name
                self.bump_n(2);
                let start = self.offset;
                while self.peek().is_some_and(is_word_char) {
                    self.bump();
                }
                TokenKind::Word(self.text.get(start..self.offset).unwrap_or(""))
            }
            c if is_word_char(c) => {
                let start = self.offset;
                while self.peek().is_some_and(is_word_char) {
                    self.bump();
                }
                TokenKind::Word(self.text.get(start..self.offset).unwrap_or(""))
            }
            _ => {
                self.bump();
                TokenKind::Other
            }
        };
        Some(Token { kind, at })
    }
}

/// The first bracket that opens nesting level `max_depth + 1`, if any.
pub(crate) fn first_too_deep(text: &str, max_depth: usize) -> Option<Position> {
    let mut depth = 0usize;
    for token in Lexer::new(text) {
        match token.kind {
            TokenKind::Open(_) => {
                depth += 1;
                if depth > max_depth {
                    return Some(token.at);
                }
            }
            TokenKind::Close(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The position of the value `path` names in `text`, when the text is laid out as expected.
pub(crate) fn locate(text: &str, path: &FieldPath) -> Option<Position> {
    let tokens: Vec<Token<'_>> = Lexer::new(text).collect();
    let mut i = skip_attributes(&tokens);
    for segment in path.segments() {
        i = enter_value(&tokens, i)?;
        i = match segment {
            Segment::Field(name) | Segment::Key(name) => find_entry(&tokens, i, name)?,
            Segment::Index(index) => find_element(&tokens, i, *index)?,
        };
    }
    tokens.get(i).map(|t| t.at)
}

/// Index of the first token after any leading `#![…]` attributes.
fn skip_attributes(tokens: &[Token<'_>]) -> usize {
    let mut i = 0;
    while matches!(tokens.get(i).map(|t| &t.kind), Some(TokenKind::Other))
        && matches!(
            tokens.get(i + 2).map(|t| &t.kind),
            Some(TokenKind::Open('['))
        )
    {
        let mut depth = 0usize;
        let mut j = i + 2;
        loop {
            match tokens.get(j).map(|t| &t.kind) {
                None => return j,
                Some(TokenKind::Open(_)) => depth += 1,
                Some(TokenKind::Close(_)) => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        i = j + 1;
    }
    i
}

/// From the start of a value, the index of its opening bracket, stepping over a struct
/// name (`Config(`) or `Some(`.
fn enter_value(tokens: &[Token<'_>], mut i: usize) -> Option<usize> {
    for _ in 0..4 {
        match (
            tokens.get(i).map(|t| &t.kind),
            tokens.get(i + 1).map(|t| &t.kind),
        ) {
            (Some(TokenKind::Word("Some")), Some(TokenKind::Open('('))) => i += 2,
            (Some(TokenKind::Word(_)), Some(TokenKind::Open('('))) => return Some(i + 1),
            (Some(TokenKind::Open(_)), _) => return Some(i),
            _ => return None,
        }
    }
    None
}

/// Inside the container opening at `open`, the start of each top-level entry.
fn entry_starts<'t>(tokens: &'t [Token<'_>], open: usize) -> impl Iterator<Item = usize> + 't {
    let mut depth = 0usize;
    let mut next_is_start = false;
    tokens
        .iter()
        .enumerate()
        .skip(open)
        .map_while(move |(i, token)| {
            let start = next_is_start && !matches!(token.kind, TokenKind::Close(_));
            next_is_start = false;
            match token.kind {
                TokenKind::Open(_) => {
                    depth += 1;
                    next_is_start = depth == 1;
                }
                TokenKind::Close(_) => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return None;
                    }
                }
                TokenKind::Comma if depth == 1 => next_is_start = true,
                _ => {}
            }
            Some(start.then_some(i))
        })
        .flatten()
}

fn find_entry(tokens: &[Token<'_>], open: usize, name: &str) -> Option<usize> {
    entry_starts(tokens, open).find_map(|i| {
        let key_matches = match tokens.get(i).map(|t| &t.kind) {
            Some(TokenKind::Word(w)) | Some(TokenKind::Str(w)) => *w == name,
            _ => false,
        };
        let colon = matches!(tokens.get(i + 1).map(|t| &t.kind), Some(TokenKind::Colon));
        (key_matches && colon).then_some(i + 2)
    })
}

fn find_element(tokens: &[Token<'_>], open: usize, index: usize) -> Option<usize> {
    entry_starts(tokens, open).nth(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r##"#![enable(implicit_some)]
// a comment with ( and [
(
    a: "x(",
    /* nested /* block */ comment ] */
    subnets: [
        (
            pools: ["1-2", r#"3"-4"#],
        ),
        Subnet(
            pools: [],
            options: { "routers": "10.0.0.1", "x": 'c' },
            relays: Some([ "9.9.9.9" ]),
        ),
    ],
)
"##;

    fn at(line: usize, column: usize) -> Option<Position> {
        Some(Position { line, column })
    }

    #[test]
    fn locates_paths() {
        let p = FieldPath::field("subnets").index(0).at("pools").index(1);
        assert_eq!(locate(TEXT, &p), at(8, 28));
        let p = FieldPath::field("subnets").index(1);
        assert_eq!(locate(TEXT, &p), at(10, 9));
        let p = FieldPath::field("subnets")
            .index(1)
            .at("options")
            .key("routers");
        assert_eq!(locate(TEXT, &p), at(12, 35));
        let p = FieldPath::field("subnets").index(1).at("relays").index(0);
        assert_eq!(locate(TEXT, &p), at(13, 28));
        let p = FieldPath::field("subnets").index(0).at("pools").index(2);
        assert_eq!(locate(TEXT, &p), None);
        let p = FieldPath::field("nothing");
        assert_eq!(locate(TEXT, &p), None);
    }

    #[test]
    fn depth_ignores_strings_and_comments() {
        assert_eq!(first_too_deep(TEXT, 5), None);
        assert_eq!(first_too_deep(TEXT, 4), at(13, 26));
        assert_eq!(first_too_deep(TEXT, 3), at(8, 20));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(first_too_deep(&deep, 64), at(1, 65));
    }

    #[test]
    fn survives_unterminated_things() {
        for text in [
            "\"abc", "r#\"abc", "/* /* */", "'", "b\"", "r#", "\u{e9}(", "",
        ] {
            let _ = Lexer::new(text).count();
            let _ = locate(text, &FieldPath::field("a").index(3));
        }
    }
}
