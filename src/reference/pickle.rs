//! A restricted reader of Python pickles (protocols 2 to 5), enough for PyTorch checkpoints.
//!
//! A pickle is a program for a stack machine whose `GLOBAL` opcode imports any Python callable
//! and whose `REDUCE` calls it: loading an untrusted pickle in Python runs arbitrary code. This
//! reader runs nothing. It builds a tree of plain values, and a reference to a Python global is
//! accepted only when it is on the caller's allow-list; any other global ends the read with
//! [`PickleError::Refused`] at the opcode that names it, before anything after it is read.
//! Calls (`REDUCE`, `NEWOBJ`) are recorded as [`Value::Object`] for the caller to interpret;
//! only `collections.OrderedDict()` becomes a dictionary, so that later opcodes can fill it.

use std::collections::HashMap;

/// A global the reader may meet: `module.name`.
pub type Global = (&'static str, &'static str);

/// A value of the pickled tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Key-value pairs in pickle order (also `OrderedDict`).
    Dict(Vec<(Value, Value)>),
    /// An allowed global itself (a class used as a dictionary key, say): `module.name`.
    Global(String),
    /// An allowed global called with `args` (`REDUCE`, `NEWOBJ`), then given `state` (`BUILD`).
    Object {
        class: String,
        args: Vec<Value>,
        state: Option<Box<Value>>,
    },
    /// A persistent id (`BINPERSID`): PyTorch's reference to a tensor storage.
    Persistent(Box<Value>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The items of a dictionary (or of an object whose state is one).
    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(items) => Some(items),
            Value::Object {
                state: Some(state), ..
            } => state.as_dict(),
            _ => None,
        }
    }

    /// The value under a string key of a dictionary.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dict()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The elements of a tuple or list.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PickleError {
    #[error(
        "refuses the pickled global '{0}': a checkpoint may hold only tensors, plain containers \
         and the reference's type classes, and loading anything else could run code"
    )]
    Refused(String),
    #[error("byte {offset}: unsupported pickle opcode 0x{opcode:02x}")]
    Opcode { offset: usize, opcode: u8 },
    #[error("byte {offset}: {message}")]
    Malformed { offset: usize, message: String },
}

/// The deepest nesting a tree may have; deeper (or recursive) structures are refused.
const MAX_DEPTH: usize = 64;

/// Reads one pickle, allowing only the globals in `allowed`.
pub fn read(bytes: &[u8], allowed: &[Global]) -> Result<Value, PickleError> {
    Machine {
        bytes,
        at: 0,
        allowed,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        nodes: Vec::new(),
    }
    .run()
}

/// What the stack and memo hold: scalars directly, containers as indices into `nodes`, so that
/// a container filled after it was memoized is seen filled through every reference (as in
/// Python, where both are the same object).
#[derive(Debug, Clone)]
enum Item {
    Scalar(Value),
    Node(usize),
}

#[derive(Debug)]
enum Node {
    List(Vec<Item>),
    Tuple(Vec<Item>),
    Dict(Vec<(Item, Item)>),
    Object {
        class: String,
        args: Vec<Item>,
        state: Option<Item>,
    },
    Persistent(Item),
}

struct Machine<'a> {
    bytes: &'a [u8],
    at: usize,
    allowed: &'a [Global],
    stack: Vec<Item>,
    marks: Vec<usize>,
    memo: HashMap<u64, Item>,
    nodes: Vec<Node>,
}

impl Machine<'_> {
    fn malformed<T>(&self, message: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError::Malformed {
            offset: self.at,
            message: message.into(),
        })
    }

    fn take(&mut self, n: usize) -> Result<&[u8], PickleError> {
        match self.at.checked_add(n) {
            Some(end) if end <= self.bytes.len() => {
                let out = &self.bytes[self.at..end];
                self.at = end;
                Ok(out)
            }
            _ => self.malformed("truncated pickle"),
        }
    }

    fn uint(&mut self, n: usize) -> Result<u64, PickleError> {
        let mut buf = [0u8; 8];
        buf[..n].copy_from_slice(self.take(n)?);
        Ok(u64::from_le_bytes(buf))
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.bytes[self.at..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return self.malformed("unterminated line");
        };
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.at += end + 1;
        Ok(text)
    }

    fn text(&mut self, n: usize) -> Result<Value, PickleError> {
        let bytes = self.take(n)?.to_vec();
        match String::from_utf8(bytes) {
            Ok(s) => Ok(Value::Str(s)),
            Err(_) => self.malformed("string is not UTF-8"),
        }
    }

    fn pop(&mut self) -> Result<Item, PickleError> {
        match self.stack.pop() {
            Some(item) => Ok(item),
            None => self.malformed("stack underflow"),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Item>, PickleError> {
        let Some(mark) = self.marks.pop() else {
            return self.malformed("no mark");
        };
        if mark > self.stack.len() {
            return self.malformed("mark above the stack");
        }
        Ok(self.stack.split_off(mark))
    }

    fn push_node(&mut self, node: Node) {
        self.nodes.push(node);
        self.stack.push(Item::Node(self.nodes.len() - 1));
    }

    fn top_node(&mut self) -> Result<usize, PickleError> {
        match self.stack.last() {
            Some(Item::Node(n)) => Ok(*n),
            _ => self.malformed("expected a container on the stack"),
        }
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), PickleError> {
        if !self.allowed.iter().any(|&(m, n)| m == module && n == name) {
            return Err(PickleError::Refused(format!("{module}.{name}")));
        }
        self.stack
            .push(Item::Scalar(Value::Global(format!("{module}.{name}"))));
        Ok(())
    }

    /// `callable(*args)` for an allowed global: `OrderedDict()` is an empty dictionary, any
    /// other call is recorded, never made.
    fn call(&mut self, callable: Item, args: Vec<Item>) -> Result<(), PickleError> {
        let Item::Scalar(Value::Global(class)) = callable else {
            return self.malformed("call of something that is not a global");
        };
        if class == "collections.OrderedDict" && args.is_empty() {
            self.push_node(Node::Dict(Vec::new()));
        } else {
            self.push_node(Node::Object {
                class,
                args,
                state: None,
            });
        }
        Ok(())
    }

    fn tuple_items(&self, item: &Item) -> Result<Vec<Item>, PickleError> {
        match item {
            Item::Node(n) => match &self.nodes[*n] {
                Node::Tuple(items) | Node::List(items) => Ok(items.clone()),
                _ => self.malformed("expected an argument tuple"),
            },
            _ => self.malformed("expected an argument tuple"),
        }
    }

    fn set_items(&mut self, pairs: Vec<Item>) -> Result<(), PickleError> {
        if !pairs.len().is_multiple_of(2) {
            return self.malformed("odd number of dictionary items");
        }
        let target = self.top_node()?;
        let mut it = pairs.into_iter();
        let Node::Dict(items) = &mut self.nodes[target] else {
            return self.malformed("setting items on something that is not a dictionary");
        };
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            items.push((k, v));
        }
        Ok(())
    }

    fn append(&mut self, values: Vec<Item>) -> Result<(), PickleError> {
        let target = self.top_node()?;
        match &mut self.nodes[target] {
            Node::List(items) => {
                items.extend(values);
                Ok(())
            }
            _ => self.malformed("appending to something that is not a list"),
        }
    }

    /// Runs the opcodes up to `STOP`, the dispatch table; opcodes that take more than a push
    /// have a method of their own below.
    fn run(mut self) -> Result<Value, PickleError> {
        loop {
            let offset = self.at;
            let opcode = self.take(1)?[0];
            match opcode {
                0x80 => {
                    self.take(1)?; // PROTO
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint
                }
                b'.' => {
                    let top = self.pop()?;
                    return self.resolve(&top, 0);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => self.dup()?,
                b'N' => self.stack.push(Item::Scalar(Value::None)),
                0x88 => self.stack.push(Item::Scalar(Value::Bool(true))),
                0x89 => self.stack.push(Item::Scalar(Value::Bool(false))),
                b'J' => self.binint()?,
                b'K' => self.binuint(1)?,
                b'M' => self.binuint(2)?,
                0x8a => self.long1()?,
                b'G' => self.binfloat()?,
                b'X' => self.unicode(4)?,
                0x8c => self.unicode(1)?,
                0x8d => self.unicode(8)?,
                b'B' | b'T' => self.binbytes(4)?,
                b'C' | b'U' => self.binbytes(1)?,
                0x8e => self.binbytes(8)?,
                b']' => self.push_node(Node::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::List(items));
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b')' => self.push_node(Node::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::Tuple(items));
                }
                0x85..=0x87 => self.tuple_of(usize::from(opcode - 0x84))?,
                b'}' => self.push_node(Node::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::Dict(Vec::new()));
                    self.set_items(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'q' => self.memo_put(1)?,
                b'r' => self.memo_put(4)?,
                0x94 => self.memoize(self.memo.len() as u64)?,
                b'h' => self.memo_get(1)?,
                b'j' => self.memo_get(4)?,
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(&module, &name)?;
                }
                0x93 => self.stack_global()?,
                b'R' | 0x81 => self.reduce()?,
                b'b' => self.build()?,
                b'Q' => {
                    let pid = self.pop()?;
                    self.push_node(Node::Persistent(pid));
                }
                _ => return Err(PickleError::Opcode { offset, opcode }),
            }
        }
    }

    /// `DUP`.
    fn dup(&mut self) -> Result<(), PickleError> {
        let top = self.pop()?;
        self.stack.push(top.clone());
        self.stack.push(top);
        Ok(())
    }

    /// `BININT`: a signed 4-byte integer.
    fn binint(&mut self) -> Result<(), PickleError> {
        let v = self.uint(4)? as u32 as i32;
        self.stack.push(Item::Scalar(Value::Int(i64::from(v))));
        Ok(())
    }

    /// `BININT1`, `BININT2`: an unsigned integer of `width` bytes.
    fn binuint(&mut self, width: usize) -> Result<(), PickleError> {
        let v = self.uint(width)?;
        self.stack.push(Item::Scalar(Value::Int(v as i64)));
        Ok(())
    }

    /// `LONG1`: little-endian two's complement of up to 8 bytes here.
    fn long1(&mut self) -> Result<(), PickleError> {
        let n = self.uint(1)? as usize;
        if n > 8 {
            return self.malformed("integer wider than 64 bits");
        }
        let raw = self.take(n)?;
        let negative = raw.last().is_some_and(|&b| b & 0x80 != 0);
        let mut buf = [if negative { 0xff } else { 0 }; 8];
        buf[..n].copy_from_slice(raw);
        self.stack
            .push(Item::Scalar(Value::Int(i64::from_le_bytes(buf))));
        Ok(())
    }

    /// `BINFLOAT`: a big-endian double.
    fn binfloat(&mut self) -> Result<(), PickleError> {
        let raw: [u8; 8] = self.take(8)?.try_into().expect("8 bytes");
        self.stack
            .push(Item::Scalar(Value::Float(f64::from_be_bytes(raw))));
        Ok(())
    }

    /// `BINUNICODE` and its short and long forms: UTF-8 text after a `width`-byte length.
    fn unicode(&mut self, width: usize) -> Result<(), PickleError> {
        let n = self.uint(width)? as usize;
        let v = self.text(n)?;
        self.stack.push(Item::Scalar(v));
        Ok(())
    }

    /// `BINBYTES`, `BINSTRING` and their short and long forms: bytes after a `width`-byte length.
    fn binbytes(&mut self, width: usize) -> Result<(), PickleError> {
        let n = self.uint(width)? as usize;
        let bytes = self.take(n)?.to_vec();
        self.stack.push(Item::Scalar(Value::Bytes(bytes)));
        Ok(())
    }

    /// `TUPLE1` to `TUPLE3`: the top `n` items as a tuple.
    fn tuple_of(&mut self, n: usize) -> Result<(), PickleError> {
        if self.stack.len() < n {
            return self.malformed("stack underflow");
        }
        let items = self.stack.split_off(self.stack.len() - n);
        self.push_node(Node::Tuple(items));
        Ok(())
    }

    /// `BINPUT`, `LONG_BINPUT`: memoizes the top under a `width`-byte key.
    fn memo_put(&mut self, width: usize) -> Result<(), PickleError> {
        let key = self.uint(width)?;
        self.memoize(key)
    }

    /// Memoizes the top of the stack under `key` (`MEMOIZE` takes the memo's size).
    fn memoize(&mut self, key: u64) -> Result<(), PickleError> {
        let top = match self.stack.last() {
            Some(t) => t.clone(),
            None => return self.malformed("memoizing an empty stack"),
        };
        self.memo.insert(key, top);
        Ok(())
    }

    /// `BINGET`, `LONG_BINGET`: pushes what is memoized under a `width`-byte key.
    fn memo_get(&mut self, width: usize) -> Result<(), PickleError> {
        let key = self.uint(width)?;
        match self.memo.get(&key) {
            Some(item) => self.stack.push(item.clone()),
            None => return self.malformed(format!("memo key {key} is not set")),
        }
        Ok(())
    }

    /// `STACK_GLOBAL`: the global named by the two strings on the stack.
    fn stack_global(&mut self) -> Result<(), PickleError> {
        let name = self.pop()?;
        let module = self.pop()?;
        match (module, name) {
            (Item::Scalar(Value::Str(m)), Item::Scalar(Value::Str(n))) => self.global(&m, &n),
            _ => self.malformed("STACK_GLOBAL needs two strings"),
        }
    }

    /// `REDUCE`, `NEWOBJ`: a call, recorded (see [`Machine::call`]).
    fn reduce(&mut self) -> Result<(), PickleError> {
        let args = self.pop()?;
        let callable = self.pop()?;
        let args = self.tuple_items(&args)?;
        self.call(callable, args)
    }

    /// `BUILD`: gives the object on the stack its state.
    fn build(&mut self) -> Result<(), PickleError> {
        let state = self.pop()?;
        let target = self.top_node()?;
        match &mut self.nodes[target] {
            Node::Object { state: s, .. } => *s = Some(state),
            // An OrderedDict's attributes, not items: PyTorch's state dicts carry
            // `_metadata` (module versions) this way.
            Node::Dict(_) => {}
            _ => return self.malformed("BUILD on something that is not an object"),
        }
        Ok(())
    }

    fn resolve(&self, item: &Item, depth: usize) -> Result<Value, PickleError> {
        if depth > MAX_DEPTH {
            return self.malformed("nested too deeply (or recursive)");
        }
        let all = |items: &[Item]| -> Result<Vec<Value>, PickleError> {
            items.iter().map(|i| self.resolve(i, depth + 1)).collect()
        };
        Ok(match item {
            Item::Scalar(v) => v.clone(),
            Item::Node(n) => match &self.nodes[*n] {
                Node::List(items) => Value::List(all(items)?),
                Node::Tuple(items) => Value::Tuple(all(items)?),
                Node::Dict(items) => Value::Dict(
                    items
                        .iter()
                        .map(|(k, v)| {
                            Ok((self.resolve(k, depth + 1)?, self.resolve(v, depth + 1)?))
                        })
                        .collect::<Result<_, PickleError>>()?,
                ),
                Node::Object { class, args, state } => Value::Object {
                    class: class.clone(),
                    args: all(args)?,
                    state: match state {
                        Some(s) => Some(Box::new(self.resolve(s, depth + 1)?)),
                        None => None,
                    },
                },
                Node::Persistent(pid) => Value::Persistent(Box::new(self.resolve(pid, depth + 1)?)),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDERED_DICT: Global = ("collections", "OrderedDict");

    #[test]
    fn reads_containers_and_scalars() {
        // pickle.dumps({'a': [1, 2.5, None, True], 'b': ('x', -3, 70000)}, protocol=2)
        let bytes = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00N\x88eX\x01\x00\x00\x00bq\x03X\x01\x00\x00\x00xq\x04J\xfd\xff\xff\xffJp\x11\x01\x00\x87q\x05u.";
        let v = read(bytes, &[]).unwrap();
        assert_eq!(
            v.get("a"),
            Some(&Value::List(vec![
                Value::Int(1),
                Value::Float(2.5),
                Value::None,
                Value::Bool(true)
            ]))
        );
        assert_eq!(
            v.get("b"),
            Some(&Value::Tuple(vec![
                Value::Str("x".into()),
                Value::Int(-3),
                Value::Int(70000)
            ]))
        );
    }

    #[test]
    fn a_container_filled_after_memoizing_is_filled_everywhere() {
        // l = []; pickle.dumps([l, l], protocol=2) after l.append(7): the inner list is
        // memoized empty, then filled, then referenced again with BINGET.
        let bytes = b"\x80\x02]q\x00(]q\x01K\x07ah\x01e.";
        let v = read(bytes, &[]).unwrap();
        let inner = Value::List(vec![Value::Int(7)]);
        assert_eq!(v, Value::List(vec![inner.clone(), inner]));
    }

    #[test]
    fn ordered_dict_fills_and_other_calls_are_recorded() {
        // OrderedDict([('k', 1)]) as torch pickles it: REDUCE with () then SETITEMS.
        let bytes =
            b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00kq\x02K\x01s.";
        let v = read(bytes, &[ORDERED_DICT]).unwrap();
        assert_eq!(v.get("k"), Some(&Value::Int(1)));
    }

    #[test]
    fn refuses_globals_not_allowed_before_calling_anything() {
        // The classic: cos\nsystem\n(S'echo owned'\ntR.
        let bytes = b"cos\nsystem\n(X\n\x00\x00\x00echo ownedtR.";
        assert_eq!(
            read(bytes, &[ORDERED_DICT]),
            Err(PickleError::Refused("os.system".into()))
        );
        // STACK_GLOBAL spells the same import.
        let bytes = b"\x80\x04\x8c\x05posix\x8c\x06system\x93.";
        assert_eq!(
            read(bytes, &[]),
            Err(PickleError::Refused("posix.system".into()))
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"\x80",
            b"X\xff\xff\xff\xff",
            b"h\x05.",
            b"u.",
            b"\xff",
        ] {
            assert!(read(bytes, &[]).is_err(), "{bytes:?}");
        }
    }
}
