//! Tokens that remember where they sit in the text, and OVS's `key=value` lexer.
//!
//! Every slice the parser looks at is a [`Tok`]: the text plus its byte offset in the
//! whole input, so any error can point at the exact token that caused it.

/// An error at a byte offset of the whole input. The public [`super::ParseError`]
/// (a 1-based character column) is made from it at the API boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Perr {
    pub at: usize,
    pub msg: String,
}

pub(crate) type PResult<T> = Result<T, Perr>;

/// A piece of the input and where it starts (byte offset into the whole text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tok<'a> {
    pub s: &'a str,
    pub at: usize,
}

impl<'a> Tok<'a> {
    pub fn new(s: &'a str) -> Self {
        Tok { s, at: 0 }
    }

    pub fn perr(&self, msg: impl Into<String>) -> Perr {
        Perr {
            at: self.at,
            msg: msg.into(),
        }
    }

    pub fn err<T>(&self, msg: impl Into<String>) -> PResult<T> {
        Err(self.perr(msg))
    }

    /// Bytes `a..b` of this token, clamped to it. Offsets always come from `find`
    /// on this token's text, so they are char boundaries; a bad one yields "".
    pub fn slice(&self, a: usize, b: usize) -> Tok<'a> {
        let b = b.min(self.s.len());
        let a = a.min(b);
        Tok {
            s: self.s.get(a..b).unwrap_or(""),
            at: self.at + a,
        }
    }

    pub fn from(&self, a: usize) -> Tok<'a> {
        self.slice(a, self.s.len())
    }

    /// The empty token just past this one (where "missing X" errors point).
    pub fn end(&self) -> Tok<'a> {
        self.from(self.s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.s.is_empty()
    }

    pub fn split_once(&self, pat: &str) -> Option<(Tok<'a>, Tok<'a>)> {
        let i = self.s.find(pat)?;
        Some((self.slice(0, i), self.from(i + pat.len())))
    }

    pub fn rsplit_once(&self, pat: &str) -> Option<(Tok<'a>, Tok<'a>)> {
        let i = self.s.rfind(pat)?;
        Some((self.slice(0, i), self.from(i + pat.len())))
    }

    pub fn strip_prefix(&self, p: &str) -> Option<Tok<'a>> {
        self.s.starts_with(p).then(|| self.from(p.len()))
    }

    pub fn strip_suffix(&self, p: &str) -> Option<Tok<'a>> {
        self.s
            .ends_with(p)
            .then(|| self.slice(0, self.s.len() - p.len()))
    }

    pub fn trim(&self) -> Tok<'a> {
        let start = self.s.len() - self.s.trim_start().len();
        let end = self.s.trim_end().len().max(start);
        self.slice(start, end)
    }
}

/// What follows a key: nothing (`tcp`), `=`/`:` and a value, or `(` and a
/// parenthesised value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delim {
    None,
    Eq,
    Colon,
    Paren,
}

/// One `key[=value]`, `key:value` or `key(value)` item.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Item<'a> {
    pub key: Tok<'a>,
    pub delim: Delim,
    pub value: Tok<'a>,
}

const SEPS: &[char] = &[',', ' ', '\t', '\r', '\n'];
const KEY_END: &[char] = &[':', '=', '(', ',', ' ', '\t', '\r', '\n'];

/// OVS's key/value lexer: items are separated by commas or white space; a key ends
/// at `:`, `=`, `(` or a separator; a value after `=`/`:` runs to the next separator
/// outside parentheses and quotes, a value after `(` to the matching `)`.
pub(crate) struct Lexer<'a> {
    src: Tok<'a>,
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(src: Tok<'a>) -> Self {
        Lexer { src, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Goes back to a position returned by [`Lexer::pos`] (one item of look-ahead).
    pub fn reset(&mut self, pos: usize) {
        self.pos = pos;
    }

    fn rest_str(&self) -> &'a str {
        self.src.s.get(self.pos..).unwrap_or("")
    }

    /// The next key and its delimiter, or `None` at the end of the input.
    pub fn next_key(&mut self) -> Option<(Tok<'a>, Delim)> {
        let rest = self.rest_str();
        self.pos += rest.len() - rest.trim_start_matches(SEPS).len();
        let rest = self.rest_str();
        if rest.is_empty() {
            return None;
        }
        let klen = rest.find(KEY_END).unwrap_or(rest.len());
        let key = self.src.slice(self.pos, self.pos + klen);
        self.pos += klen;
        let delim = match rest[klen..].chars().next() {
            Some('=') => Delim::Eq,
            Some(':') => Delim::Colon,
            Some('(') => Delim::Paren,
            _ => Delim::None,
        };
        if delim != Delim::None {
            self.pos += 1;
        }
        Some((key, delim))
    }

    /// The value that follows a key with delimiter `delim`.
    pub fn value(&mut self, delim: Delim) -> PResult<Tok<'a>> {
        let start = self.pos;
        match delim {
            Delim::None => Ok(self.src.slice(start, start)),
            Delim::Eq | Delim::Colon => {
                let end = scan(self.src, start, false)?;
                self.pos = end;
                Ok(self.src.slice(start, end))
            }
            Delim::Paren => {
                let end = scan(self.src, start, true)?;
                // Past the ')'; what follows must be a separator or the end.
                self.pos = end + 1;
                match self.rest_str().chars().next() {
                    Some(c) if !SEPS.contains(&c) => self
                        .src
                        .slice(self.pos, self.pos)
                        .err(format!("expected ',' after ')', found '{c}'")),
                    _ => Ok(self.src.slice(start, end)),
                }
            }
        }
    }

    /// Everything from the current position on (the action list after `actions=`).
    pub fn rest(&mut self) -> Tok<'a> {
        let t = self.src.from(self.pos);
        self.pos = self.src.s.len();
        t
    }

    pub fn next_item(&mut self) -> Option<PResult<Item<'a>>> {
        let (key, delim) = self.next_key()?;
        Some(self.value(delim).map(|value| Item { key, delim, value }))
    }
}

/// Scans a value from byte `start` of `src`: to the first separator outside
/// parentheses and quotes, or (`paren`) to the `)` closing a `(` just before
/// `start`. Returns the end offset.
fn scan(src: Tok<'_>, start: usize, paren: bool) -> PResult<usize> {
    let text = src.s.get(start..).unwrap_or("");
    let mut open: Vec<usize> = Vec::new();
    let mut quote: Option<usize> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        let at = start + i;
        if quote.is_some() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quote = None;
            }
            continue;
        }
        match c {
            '"' => quote = Some(at),
            '(' => open.push(at),
            ')' => match (open.pop(), paren) {
                (Some(_), _) => {}
                (None, true) => return Ok(at),
                (None, false) => return src.slice(at, at + 1).err("unbalanced ')'"),
            },
            c if !paren && open.is_empty() && SEPS.contains(&c) => return Ok(at),
            _ => {}
        }
    }
    if let Some(q) = quote {
        return src.slice(q, q + 1).err("unterminated quoted string");
    }
    if let Some(&o) = open.last() {
        return src.slice(o, o + 1).err("missing ')' for this '('");
    }
    if paren {
        // The '(' that opened this value sits just before `start`.
        let o = start.saturating_sub(1);
        return src.slice(o, o + 1).err("missing ')' for this '('");
    }
    Ok(src.s.len())
}

/// Parses a decimal or `0x` hexadecimal unsigned integer of up to 128 bits.
pub(crate) fn parse_u128(t: Tok<'_>) -> PResult<u128> {
    let (digits, radix) = match t.s.strip_prefix("0x").or_else(|| t.s.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None => (t.s, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        if t.is_empty() {
            return t.err("expected a number");
        }
        return t.err(format!("expected a number, found '{}'", t.s));
    }
    u128::from_str_radix(digits, radix)
        .map_err(|_| t.perr(format!("number '{}' is too large", t.s)))
}

/// Parses an integer no larger than `max`; `what` names it in the error.
pub(crate) fn parse_uint(t: Tok<'_>, max: u128, what: &str) -> PResult<u128> {
    let v = parse_u128(t)?;
    if v > max {
        return t.err(format!("{what} {} is out of range (at most {max})", t.s));
    }
    Ok(v)
}

pub(crate) fn parse_u16(t: Tok<'_>, what: &str) -> PResult<u16> {
    parse_uint(t, u128::from(u16::MAX), what).map(|v| v as u16)
}

pub(crate) fn parse_u32(t: Tok<'_>, what: &str) -> PResult<u32> {
    parse_uint(t, u128::from(u32::MAX), what).map(|v| v as u32)
}

pub(crate) fn parse_u64(t: Tok<'_>, what: &str) -> PResult<u64> {
    parse_uint(t, u128::from(u64::MAX), what).map(|v| v as u64)
}

/// The all-ones value of a `bits`-wide field.
pub(crate) const fn ones(bits: u32) -> u128 {
    if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

/// Edit distance counting a swap of neighbours as one edit (optimal string
/// alignment), for "did you mean" hints: `tpc` is one edit from `tcp`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// ` (did you mean 'x'?)` for the closest candidate within two edits, or "".
pub(crate) fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> String {
    if word.len() > 40 {
        return String::new();
    }
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!(" (did you mean '{c}'?)"))
        .unwrap_or_default()
}
