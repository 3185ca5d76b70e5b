/**
 * Strips unvetted globals from a value tree before it is written into a new checkpoint. Reading a hostile pickle is
 * safe (globals are inert records), but writing the record back would make torch.load of megahub's output import
 * and call it. Each unvetted global or call is replaced by a plain string that says what it was; the caller names
 * the dropped globals in a notice. Shared objects stay shared; the input tree is not modified.
 */
import { MegahubError } from "../../errors.js";
import { isSafeCallable, isSafeClass, isSafeGlobal, SHAPED_CALLS } from "./safe-globals.js";
import { PyCall, PyDict, PyFloat, PyGlobal, PyList, PySet, PyTuple, TorchStorage, TorchTensor, type PyValue } from "./values.js";

/** Deeper trees than this are refused: no checkpoint nests args or state this far, and recursion must stay bounded. */
export const MAX_VALUE_DEPTH = 1000;

export interface SanitizeResult<T extends PyValue = PyValue> {
  value: T;
  /** Qualified names of the globals dropped, in first-seen order. */
  dropped: string[];
}

/** Why a call is not vetted (the global to name), or undefined when it builds data only. */
export function callProblem(c: PyCall): string | undefined {
  const g = c.callable;
  if (!(g instanceof PyGlobal)) return "call";
  const q = g.qualified;
  if (!isSafeCallable(q)) return q;
  if (!SHAPED_CALLS.has(q)) return undefined;
  const [a, b, rest] = c.args.items;
  const cls = a instanceof PyGlobal && isSafeClass(a.qualified);
  if (q.endsWith(".getattr")) {
    return cls && typeof b === "string" && /^[A-Za-z][A-Za-z0-9_]*$/.test(b) && c.args.items.length === 2 ? undefined : q;
  }
  if (q.endsWith("._reconstructor")) {
    const base = b instanceof PyGlobal && (b.qualified === "builtins.object" || b.qualified === "__builtin__.object");
    return cls && base && rest === null && c.args.items.length === 3 ? undefined : q;
  }
  return cls ? undefined : q; // __newobj__(cls, *args)
}

/** A short plain-text stand-in for a dropped value. */
function describe(v: PyValue, depth = 0): string {
  if (v === null) return "None";
  if (typeof v === "string") return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v);
  if (typeof v !== "object") return String(v);
  if (v instanceof PyFloat) return String(v.value);
  if (v instanceof PyGlobal) return v.qualified;
  if (depth > 2) return "…";
  if (v instanceof PyCall) {
    const args = v.args.items.slice(0, 4).map((x) => describe(x, depth + 1));
    return `${describe(v.callable, depth + 1)}(${args.join(", ")}${v.args.items.length > 4 ? ", …" : ""})`;
  }
  return `<${v.constructor.name}>`;
}

/**
 * Returns a copy of `value` without unvetted globals. With `keepUnknown`, the value is returned as it is and the
 * unvetted globals are still listed (the caller chose to carry them).
 */
export function sanitizeValue<T extends PyValue>(value: T, options: { keepUnknown?: boolean; where?: string } = {}): SanitizeResult<T> {
  const dropped = new Set<string>();
  const memo = new Map<object, PyValue>();
  const active = new Set<object>();
  const note = (name: string) => dropped.add(name);

  const replace = (v: PyCall | PyGlobal): string => {
    const text = describe(v);
    return `<removed by megahub: ${text.length > 200 ? `${text.slice(0, 200)}…` : text}>`;
  };

  function clone(v: PyValue, depth: number): PyValue {
    if (v === null || typeof v !== "object" || v instanceof PyFloat || v instanceof Uint8Array) return v;
    if (v instanceof TorchTensor || v instanceof TorchStorage) return v; // rebuilt by the writer from its own allow-listed globals
    if (v instanceof PyGlobal) {
      if (isSafeGlobal(v.qualified)) return v;
      note(v.qualified);
      return options.keepUnknown ? v : replace(v);
    }
    const known = memo.get(v);
    if (known !== undefined) return known;
    if (depth > MAX_VALUE_DEPTH) {
      throw new MegahubError("FORMAT", `value nests deeper than ${MAX_VALUE_DEPTH} levels`, options.where ? { file: options.where } : {});
    }
    if (active.has(v)) {
      throw new MegahubError("UNSUPPORTED", "a tuple or call contains itself without a list or dict in between", options.where ? { file: options.where } : {});
    }
    const d = depth + 1;
    if (v instanceof PyList) {
      const out = new PyList();
      memo.set(v, out);
      for (const x of v.items) out.items.push(clone(x, d));
      return out;
    }
    if (v instanceof PyDict) {
      const out = new PyDict([], v.ordered);
      memo.set(v, out);
      for (const [k, x] of v.entries) out.entries.push([clone(k, d), clone(x, d)]);
      return out;
    }
    if (v instanceof PySet) {
      const out = new PySet([], v.frozen);
      memo.set(v, out);
      for (const x of v.items) out.items.push(clone(x, d));
      return out;
    }
    active.add(v);
    try {
      if (v instanceof PyTuple) {
        const out = new PyTuple(v.items.map((x) => clone(x, d)));
        memo.set(v, out);
        return out;
      }
      const problem = callProblem(v);
      if (problem !== undefined) {
        note(problem);
        if (!options.keepUnknown) {
          const text = replace(v);
          memo.set(v, text);
          return text;
        }
      }
      const out = new PyCall(clone(v.callable, d), clone(v.args, d) as PyTuple, v.kind);
      memo.set(v, out);
      if (v.state !== undefined) out.state = clone(v.state, d);
      for (const x of v.listItems) out.listItems.push(clone(x, d));
      for (const [k, x] of v.dictItems) out.dictItems.push([clone(k, d), clone(x, d)]);
      return out;
    } finally {
      active.delete(v);
    }
  }

  const result = clone(value, 0) as T;
  return { value: options.keepUnknown ? value : result, dropped: [...dropped] };
}

/** The unvetted globals and calls a value tree holds (what torch.load of it would import or call). */
export function auditValue(value: PyValue): string[] {
  return sanitizeValue(value, { keepUnknown: true }).dropped;
}

/** The notice for unvetted globals in carried values, kept or dropped. */
export function unknownGlobalsNote(globals: readonly string[], kept: boolean): string {
  return kept
    ? `carried unvetted pickle globals into the new checkpoint as asked (--keep-unknown-globals): ${globals.join(", ")}; torch.load will import and may run them`
    : `dropped unvetted pickle globals from the carried args/state (replaced by plain text; --keep-unknown-globals carries them): ${globals.join(", ")}`;
}
