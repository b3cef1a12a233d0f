import { describe, expect, it } from "vitest";

import { NoEditor, commandArguments, editorState, fromEditorUi } from "../src/args";

const URI = "file:///work/app/stats.py";
const SELECTION = { start: { line: 5, character: 0 }, end: { line: 8, character: 0 } };

describe("commandArguments", () => {
  it.each([
    ["tierhost.plan", [], { uri: URI, selection: SELECTION }, [URI, SELECTION]],
    ["tierhost.implement", [], { uri: URI, selection: null }, [URI, null]],
    // the context menu passes VS Code's resource Uri: replaced by the editor's state
    ["tierhost.review", [{ scheme: "file", path: "/work/app/stats.py" }], { uri: URI, selection: SELECTION }, [URI, SELECTION]],
    // a code action's command already carries [uri, range]: passed through
    ["tierhost.plan", [URI, SELECTION], { uri: "file:///other.py", selection: null }, [URI, SELECTION]],
    // host commands are not about a document
    ["tierhost.setMode", ["gaming"], { uri: URI, selection: null }, ["gaming"]],
    ["tierhost.cancel", [], { uri: URI, selection: null }, []],
    ["tierhost.status", [], undefined, []],
  ])("%s %j → the bridge's arguments", (command, given, editor, expected) => {
    expect(commandArguments(command, given, editor)).toEqual(expected);
  });

  it("says what to do when a task command has no editor", () => {
    expect(() => commandArguments("tierhost.plan", [], undefined)).toThrow(NoEditor);
    expect(() => commandArguments("tierhost.plan", [], undefined)).toThrow(/needs an open editor/);
  });
});

describe("fromEditorUi", () => {
  it.each([
    [[], true],
    [[{ scheme: "file", path: "/a.py", fsPath: "/a.py" }], true],
    [[URI], false],
    [[{ uri: URI }], false],
    [[null], false],
  ])("%j → %s", (args, expected) => {
    expect(fromEditorUi(args)).toBe(expected);
  });
});

describe("editorState", () => {
  const editor = (empty: boolean) =>
    ({
      document: { uri: { toString: () => URI } },
      selection: { isEmpty: empty, start: { line: 5, character: 0 }, end: { line: 8, character: 0 } },
    }) as never;

  it("keeps a selection as a plain LSP range", () => {
    expect(editorState(editor(false))).toEqual({ uri: URI, selection: SELECTION });
  });

  it("sends no range for an empty selection (the whole file)", () => {
    expect(editorState(editor(true))).toEqual({ uri: URI, selection: null });
  });

  it("is undefined without an editor", () => {
    expect(editorState(undefined)).toBeUndefined();
  });
});
