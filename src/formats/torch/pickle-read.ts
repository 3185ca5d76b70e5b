import { formatError } from "../../errors.js";
import { decodeLong, latin1Bytes, MAX_LONG_BYTES, narrowInt, rawUnicodeEscape } from "./pickle-scalars.js";
import { PyCall, PyDict, PyFloat, PyGlobal, PyList, PySet, PyTuple, type PyValue } from "./values.js";

/** Bounds that keep a hostile pickle from exhausting memory: a checkpoint's data.pkl is far below these. */
export const MAX_PICKLE_STACK = 10_000_000;
export const MAX_PICKLE_MEMO = 10_000_000;

export interface UnpickleHooks {
  /** Resolves BINPERSID/PERSID ids (torch storages). */
  persistentLoad?: (pid: PyValue) => PyValue;
  /** Called for REDUCE on a global; returns a value to replace the inert PyCall, or undefined to keep it. */
  reduce?: (fn: PyGlobal, args: PyTuple) => PyValue | undefined;
}

export interface UnpickleResult {
  value: PyValue;
  /** Offset just past STOP, so concatenated pickles (legacy torch streams) can be read one after another. */
  end: number;
  /** Every global the pickle named, "module.name", in first-seen order. */
  globals: string[];
}

const MARK = Symbol("mark");
type Slot = PyValue | typeof MARK;

/**
 * A pickle virtual machine for protocols 0–5 that builds data only. GLOBAL/STACK_GLOBAL produce PyGlobal records;
 * REDUCE/NEWOBJ/INST/OBJ produce inert PyCall records unless a hook recognises the callable.
 */
export function unpickle(bytes: Uint8Array, file: string, hooks: UnpickleHooks = {}, start = 0): UnpickleResult {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stack: Slot[] = [];
  const marks: number[] = [];
  const memo = new Map<number, PyValue>();
  const globals: string[] = [];
  const seenGlobals = new Set<string>();
  const latin1 = new TextDecoder("latin1");
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  let p = start;
  let opPos = start;

  const fail = (detail: string): never => {
    throw formatError(`pickle: ${detail}`, { file, offset: opPos });
  };
  const need = (n: number): number => {
    if (!Number.isSafeInteger(n) || n < 0 || p + n > bytes.length) {
      fail(`expected ${n} more bytes but the pickle has ${bytes.length - p}`);
    }
    const at = p;
    p += n;
    return at;
  };
  const u8 = () => bytes[need(1)] as number;
  const u16 = () => dv.getUint16(need(2), true);
  const u32 = () => dv.getUint32(need(4), true);
  const u64 = (): number => {
    const v = dv.getBigUint64(need(8), true);
    return v > BigInt(Number.MAX_SAFE_INTEGER) ? fail(`length ${v} is too large`) : Number(v);
  };
  const take = (n: number) => bytes.subarray(need(n), p);
  const line = (): string => {
    const nl = bytes.indexOf(0x0a, p);
    if (nl < 0) fail("unterminated text line");
    const s = latin1.decode(bytes.subarray(p, nl));
    p = nl + 1;
    return s;
  };
  const str = (b: Uint8Array): string => {
    try {
      return utf8.decode(b);
    } catch {
      return fail("string is not valid UTF-8");
    }
  };
  const push = (v: PyValue) => {
    if (stack.length >= MAX_PICKLE_STACK) fail("stack limit exceeded");
    stack.push(v);
  };
  const pop = (): PyValue => {
    if (stack.length === 0 || (marks.length > 0 && stack.length <= (marks.at(-1) as number))) fail("stack underflow");
    const v = stack.pop() as Slot;
    return v === MARK ? fail("unexpected MARK") : v;
  };
  const top = (): PyValue => {
    const v = stack.at(-1);
    return v === undefined || v === MARK ? fail("stack underflow") : v;
  };
  const popMark = (): PyValue[] => {
    const m = marks.pop();
    if (m === undefined) fail("no MARK on the stack");
    const items = stack.splice(m as number) as Slot[];
    if (items.shift() !== MARK) fail("corrupt MARK");
    return items as PyValue[];
  };
  const memoPut = (i: number) => {
    if (memo.size >= MAX_PICKLE_MEMO && !memo.has(i)) fail("memo limit exceeded");
    memo.set(i, top());
  };
  const memoGet = (i: number) => {
    const v = memo.get(i);
    if (v === undefined && !memo.has(i)) fail(`memo key ${i} was never stored`);
    push(v as PyValue);
  };
  const global = (module: string, name: string) => {
    const q = `${module}.${name}`;
    if (!seenGlobals.has(q)) {
      seenGlobals.add(q);
      globals.push(q);
    }
    push(new PyGlobal(module, name));
  };
  const asTuple = (v: PyValue): PyTuple => (v instanceof PyTuple ? v : fail("expected a tuple of arguments"));
  const call = (fn: PyValue, args: PyTuple, kind: "reduce" | "newobj") => {
    if (fn instanceof PyGlobal) {
      if (kind === "reduce" && hooks.reduce) {
        const replaced = hooks.reduce(fn, args);
        if (replaced !== undefined) {
          push(replaced);
          return;
        }
      }
      if (fn.module === "collections" && fn.name === "OrderedDict" && args.items.length === 0) {
        push(new PyDict([], true));
        return;
      }
      // Protocol 2 has no bytes opcode: Python 3 pickles bytes as _codecs.encode(latin1 text, "latin1").
      const [text, encoding] = args.items;
      if (fn.qualified === "_codecs.encode" && typeof text === "string" && encoding === "latin1" && args.items.length === 2) {
        push(latin1Bytes(text));
        return;
      }
    }
    push(new PyCall(fn, args, kind));
  };
  const setItems = (target: PyValue, items: PyValue[]) => {
    if (items.length % 2 !== 0) fail("SETITEMS needs key/value pairs");
    for (let i = 0; i < items.length; i += 2) {
      const k = items[i] as PyValue;
      const v = items[i + 1] as PyValue;
      if (target instanceof PyDict) target.set(k, v);
      else if (target instanceof PyCall) target.dictItems.push([k, v]);
      else fail("SETITEM on a value that is not a dict");
    }
  };
  const appendItems = (target: PyValue, items: PyValue[]) => {
    if (target instanceof PyList) target.items.push(...items);
    else if (target instanceof PyCall) target.listItems.push(...items);
    else fail("APPEND on a value that is not a list");
  };
  const long = (b: Uint8Array): number | bigint =>
    b.length > MAX_LONG_BYTES ? fail(`integer of ${b.length} bytes is beyond megahub's limit of ${MAX_LONG_BYTES}`) : decodeLong(b);
  const parseInt10 = (s: string): number | bigint => {
    // Decimal text → BigInt is superlinear; no real pickle writes an integer of this many digits.
    if (s.length > 20_000) fail(`integer literal of ${s.length} digits is beyond megahub's limit`);
    if (!/^-?\d+L?$/.test(s)) fail(`bad integer literal ${JSON.stringify(s.slice(0, 40))}`);
    return narrowInt(BigInt(s.replace(/L$/, "")));
  };

  for (;;) {
    opPos = p;
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) fail("pickle protocol above 5");
        break;
      case 0x95: // FRAME (a length hint only)
        u64();
        break;
      case 0x2e: // STOP
        return { value: pop(), end: p, globals };
      case 0x28: // MARK
        marks.push(stack.length);
        stack.push(MARK);
        break;
      case 0x30: // POP
        if (stack.at(-1) === MARK) {
          stack.pop();
          marks.pop();
        } else pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        push(top());
        break;
      case 0x4e: // NONE
        push(null);
        break;
      case 0x88: // NEWTRUE
        push(true);
        break;
      case 0x89: // NEWFALSE
        push(false);
        break;
      case 0x4a: // BININT
        push(dv.getInt32(need(4), true));
        break;
      case 0x4b: // BININT1
        push(u8());
        break;
      case 0x4d: // BININT2
        push(u16());
        break;
      case 0x8a: // LONG1
        push(long(take(u8())));
        break;
      case 0x8b: // LONG4
        push(long(take(u32())));
        break;
      case 0x49: {
        // INT (protocol 0); "00"/"01" are False/True
        const s = line();
        push(s === "00" ? false : s === "01" ? true : parseInt10(s));
        break;
      }
      case 0x4c: // LONG (protocol 0)
        push(parseInt10(line()));
        break;
      case 0x47: // BINFLOAT (big-endian)
        push(new PyFloat(dv.getFloat64(need(8), false)));
        break;
      case 0x46: {
        // FLOAT (protocol 0)
        const f = Number(line());
        push(new PyFloat(Number.isNaN(f) ? fail("bad float literal") : f));
        break;
      }
      case 0x58: // BINUNICODE
        push(str(take(u32())));
        break;
      case 0x8c: // SHORT_BINUNICODE
        push(str(take(u8())));
        break;
      case 0x8d: // BINUNICODE8
        push(str(take(u64())));
        break;
      case 0x56: // UNICODE (protocol 0, raw-unicode-escape)
        push(rawUnicodeEscape(line()));
        break;
      case 0x54: // BINSTRING (py2 str)
        push(latin1.decode(take(dv.getInt32(need(4), true))));
        break;
      case 0x55: // SHORT_BINSTRING
        push(latin1.decode(take(u8())));
        break;
      case 0x53: {
        // STRING (protocol 0, quoted)
        const s = line();
        push(s.length >= 2 && (s[0] === "'" || s[0] === '"') ? s.slice(1, -1) : fail("bad STRING literal"));
        break;
      }
      case 0x42: // BINBYTES
        push(take(u32()).slice());
        break;
      case 0x43: // SHORT_BINBYTES
        push(take(u8()).slice());
        break;
      case 0x8e: // BINBYTES8
      case 0x96: // BYTEARRAY8
        push(take(u64()).slice());
        break;
      case 0x5d: // EMPTY_LIST
        push(new PyList());
        break;
      case 0x61: {
        // APPEND
        const v = pop();
        appendItems(top(), [v]);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        appendItems(top(), items);
        break;
      }
      case 0x6c: // LIST
        push(new PyList(popMark()));
        break;
      case 0x29: // EMPTY_TUPLE
        push(new PyTuple([]));
        break;
      case 0x74: // TUPLE
        push(new PyTuple(popMark()));
        break;
      case 0x85: // TUPLE1
        push(new PyTuple([pop()]));
        break;
      case 0x86: {
        const b = pop();
        push(new PyTuple([pop(), b]));
        break;
      }
      case 0x87: {
        const c = pop();
        const b = pop();
        push(new PyTuple([pop(), b, c]));
        break;
      }
      case 0x7d: // EMPTY_DICT
        push(new PyDict());
        break;
      case 0x64: {
        // DICT
        const d = new PyDict();
        setItems(d, popMark());
        push(d);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x8f: // EMPTY_SET
        push(new PySet());
        break;
      case 0x90: {
        // ADDITEMS
        const items = popMark();
        const s = top();
        if (!(s instanceof PySet)) fail("ADDITEMS on a value that is not a set");
        (s as PySet).items.push(...items);
        break;
      }
      case 0x91: // FROZENSET
        push(new PySet(popMark(), true));
        break;
      case 0x63: {
        // GLOBAL
        const module = line();
        global(module, line());
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== "string" || typeof name !== "string") fail("STACK_GLOBAL needs two strings");
        global(module as string, name as string);
        break;
      }
      case 0x52: {
        // REDUCE
        const args = asTuple(pop());
        call(pop(), args, "reduce");
        break;
      }
      case 0x81: {
        // NEWOBJ
        const args = asTuple(pop());
        call(pop(), args, "newobj");
        break;
      }
      case 0x92: {
        // NEWOBJ_EX (kwargs kept inside args as a trailing dict)
        const kwargs = pop();
        const args = asTuple(pop());
        call(pop(), new PyTuple([...args.items, kwargs]), "newobj");
        break;
      }
      case 0x69: {
        // INST (protocol 0)
        const module = line();
        const name = line();
        global(module, name);
        const cls = pop();
        push(new PyCall(cls, new PyTuple(popMark()), "newobj"));
        break;
      }
      case 0x6f: {
        // OBJ
        const items = popMark();
        if (items.length === 0) fail("OBJ without a class");
        push(new PyCall(items[0] as PyValue, new PyTuple(items.slice(1)), "newobj"));
        break;
      }
      case 0x62: {
        // BUILD
        const state = pop();
        const obj = top();
        if (obj instanceof PyCall) obj.state = state;
        else if (obj instanceof PyDict && state instanceof PyDict) for (const [k, v] of state.entries) obj.set(k, v);
        // BUILD on tensors (python-side attributes) or plain data carries nothing we need.
        break;
      }
      case 0x71: // BINPUT
        memoPut(u8());
        break;
      case 0x72: // LONG_BINPUT
        memoPut(u32());
        break;
      case 0x70: // PUT
        memoPut(Number(parseInt10(line())));
        break;
      case 0x94: // MEMOIZE
        memoPut(memo.size);
        break;
      case 0x68: // BINGET
        memoGet(u8());
        break;
      case 0x6a: // LONG_BINGET
        memoGet(u32());
        break;
      case 0x67: // GET
        memoGet(Number(parseInt10(line())));
        break;
      case 0x51: {
        // BINPERSID
        const pid = pop();
        push(hooks.persistentLoad ? hooks.persistentLoad(pid) : fail("persistent id without a loader"));
        break;
      }
      case 0x50: {
        // PERSID
        const pid = line();
        push(hooks.persistentLoad ? hooks.persistentLoad(pid) : fail("persistent id without a loader"));
        break;
      }
      default:
        fail(`unsupported opcode 0x${op.toString(16).padStart(2, "0")}`);
    }
  }
}
