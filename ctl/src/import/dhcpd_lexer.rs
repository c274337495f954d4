//! ISC dhcpd.leases: the lexer (words, quoted strings with their escapes, braces, ';', comments),
//! reading through a [`ByteReader`] and counting lines.

use std::io::{self, Read};

use super::input::ByteReader;
use super::MAX_TOKEN;

/// One token of a dhcpd.leases file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tok {
    /// A bare word (text in [`Lexer::tok`]).
    Word,
    /// A quoted string, escapes undone (text in [`Lexer::tok`]).
    Str,
    /// `{`
    Open,
    /// `}`
    Close,
    /// `;`
    Semi,
    /// A word or string longer than MAX_TOKEN (its text is dropped).
    TooLong,
    /// End of file inside a quoted string.
    Unterminated,
    /// End of file.
    Eof,
}

/// Bytes that end a word.
const fn word_delimiters() -> [bool; 256] {
    let mut t = [false; 256];
    let delims = b" \t\r\n\x0b\x0c{};\"#";
    let mut i = 0;
    while i < delims.len() {
        t[delims[i] as usize] = true;
        i += 1;
    }
    t
}
static WORD_DELIMITER: [bool; 256] = word_delimiters();

/// Tokens of a dhcpd.leases file, read through a fixed buffer.
pub(super) struct Lexer<R> {
    /// The input.
    pub(super) input: ByteReader<R>,
    /// Line the lexer is on (1-based).
    pub(super) line: u64,
    /// Text of the last word or string.
    pub(super) tok: Vec<u8>,
    /// Line where the last token started.
    pub(super) tok_line: u64,
}

impl<R: Read> Lexer<R> {
    pub(super) fn new(reader: R) -> Self {
        Lexer {
            input: ByteReader::new(reader),
            line: 1,
            tok: Vec::with_capacity(64),
            tok_line: 1,
        }
    }

    pub(super) fn next(&mut self) -> io::Result<Tok> {
        loop {
            if !self.input.fill()? {
                self.tok_line = self.line;
                return Ok(Tok::Eof);
            }
            // Skip a run of white space within the buffer, counting newlines.
            let avail = self.input.available();
            let mut i = 0;
            let mut newlines = 0;
            let mut next = None;
            while let Some(&b) = avail.get(i) {
                match b {
                    b'\n' => newlines += 1,
                    b' ' | b'\t' | b'\r' | 0x0b | 0x0c => {}
                    _ => {
                        next = Some(b);
                        break;
                    }
                }
                i += 1;
            }
            self.line += newlines;
            self.input.advance(i);
            let Some(b) = next else {
                continue; // buffer exhausted: refill
            };
            self.tok_line = self.line;
            match b {
                b'#' => self.skip_comment()?,
                b'{' => {
                    self.input.advance(1);
                    return Ok(Tok::Open);
                }
                b'}' => {
                    self.input.advance(1);
                    return Ok(Tok::Close);
                }
                b';' => {
                    self.input.advance(1);
                    return Ok(Tok::Semi);
                }
                b'"' => {
                    self.input.advance(1);
                    return self.string();
                }
                _ => return self.word(),
            }
        }
    }

    /// Fast path for statements whose arguments are not needed: consume up to and including the
    /// next ';' if no quote, brace or comment comes first. Returns false (nothing special
    /// consumed past plain bytes) when the normal tokenizer must take over.
    pub(super) fn skip_plain_statement(&mut self) -> io::Result<bool> {
        while self.input.fill()? {
            let avail = self.input.available();
            let mut newlines = 0;
            let mut stop = None;
            for (i, &b) in avail.iter().enumerate() {
                match b {
                    b'\n' => newlines += 1,
                    b';' | b'"' | b'{' | b'}' | b'#' => {
                        stop = Some((i, b));
                        break;
                    }
                    _ => {}
                }
            }
            self.line += newlines;
            match stop {
                Some((i, b';')) => {
                    self.input.advance(i + 1);
                    return Ok(true);
                }
                Some((i, _)) => {
                    self.input.advance(i);
                    return Ok(false);
                }
                None => {
                    let n = avail.len();
                    self.input.advance(n);
                }
            }
        }
        Ok(false)
    }

    fn skip_comment(&mut self) -> io::Result<()> {
        while self.input.fill()? {
            let avail = self.input.available();
            match avail.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.input.advance(i);
                    return Ok(());
                }
                None => {
                    let n = avail.len();
                    self.input.advance(n);
                }
            }
        }
        Ok(())
    }

    fn word(&mut self) -> io::Result<Tok> {
        self.tok.clear();
        let mut too_long = false;
        while self.input.fill()? {
            let avail = self.input.available();
            let end = avail
                .iter()
                .position(|&b| WORD_DELIMITER[usize::from(b)])
                .unwrap_or(avail.len());
            if !too_long {
                if self.tok.len() + end > MAX_TOKEN {
                    too_long = true;
                    self.tok.clear();
                } else {
                    self.tok.extend_from_slice(&avail[..end]);
                }
            }
            let done = end < avail.len();
            self.input.advance(end);
            if done {
                break;
            }
        }
        Ok(if too_long { Tok::TooLong } else { Tok::Word })
    }

    fn push_str_byte(&mut self, b: u8, too_long: &mut bool) {
        if *too_long {
            return;
        }
        if self.tok.len() >= MAX_TOKEN {
            *too_long = true;
            self.tok.clear();
        } else {
            self.tok.push(b);
        }
    }

    /// A quoted string (opening quote consumed); escapes: `\ooo` octal, `\n`, `\t`, `\r`, `\x`.
    fn string(&mut self) -> io::Result<Tok> {
        self.tok.clear();
        let mut too_long = false;
        loop {
            let Some(b) = self.input.peek()? else {
                return Ok(Tok::Unterminated);
            };
            self.input.advance(1);
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(e) = self.input.peek()? else {
                        return Ok(Tok::Unterminated);
                    };
                    self.input.advance(1);
                    let v = match e {
                        b'0'..=b'7' => {
                            let mut v = u32::from(e - b'0');
                            for _ in 0..2 {
                                match self.input.peek()? {
                                    Some(d @ b'0'..=b'7') => {
                                        self.input.advance(1);
                                        v = v * 8 + u32::from(d - b'0');
                                    }
                                    _ => break,
                                }
                            }
                            (v & 0xff) as u8
                        }
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        b'\n' => {
                            self.line += 1;
                            b'\n'
                        }
                        other => other,
                    };
                    self.push_str_byte(v, &mut too_long);
                }
                b'\n' => {
                    self.line += 1;
                    self.push_str_byte(b, &mut too_long);
                }
                _ => self.push_str_byte(b, &mut too_long),
            }
        }
        Ok(if too_long { Tok::TooLong } else { Tok::Str })
    }
}
