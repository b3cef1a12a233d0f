/**
 * The arguments a Tierhost command sends to the bridge.
 *
 * The language client registers every command the server offers; invoked from the
 * palette or the editor context menu a command arrives with no arguments (or with
 * VS Code's resource Uri), so the active editor's document and selection are filled in
 * here. A code action's command already carries `[uri, range]` and passes through.
 * Pure apart from the small `editorState` adapter, so it is unit-tested with a stub.
 */
import type * as vscode from "vscode";

export interface Position {
  line: number;
  character: number;
}

export interface Range {
  start: Position;
  end: Position;
}

/** What the bridge needs to know about the editor a command was run in. */
export interface EditorState {
  uri: string;
  selection: Range | null;
}

export const TASK_COMMANDS = [
  "tierhost.plan",
  "tierhost.design",
  "tierhost.review",
  "tierhost.implement",
  "tierhost.explain",
] as const;

export function isTaskCommand(command: string): boolean {
  return (TASK_COMMANDS as readonly string[]).includes(command);
}

/** An argument list built by VS Code itself (palette: none; context menu: the Uri). */
export function fromEditorUi(args: readonly unknown[]): boolean {
  if (args.length === 0) {
    return true;
  }
  const first = args[0] as Record<string, unknown> | null;
  return (
    typeof first === "object" && first !== null && "scheme" in first && "path" in first
  );
}

export class NoEditor extends Error {}

/**
 * The arguments to send for `command`. Task commands: `[uri, range | null]` from the
 * editor when VS Code supplied none; everything else passes through unchanged.
 */
export function commandArguments(
  command: string,
  args: readonly unknown[],
  editor: EditorState | undefined,
): unknown[] {
  if (!isTaskCommand(command) || !fromEditorUi(args)) {
    return [...args];
  }
  if (editor === undefined) {
    throw new NoEditor(`${command} needs an open editor: open a file, select code, and run it again`);
  }
  return [editor.uri, editor.selection];
}

/** The active editor as plain data: its URI and its selection (null when empty). */
export function editorState(editor: vscode.TextEditor | undefined): EditorState | undefined {
  if (editor === undefined) {
    return undefined;
  }
  const s = editor.selection;
  const selection = s.isEmpty
    ? null
    : {
        start: { line: s.start.line, character: s.start.character },
        end: { line: s.end.line, character: s.end.character },
      };
  return { uri: editor.document.uri.toString(), selection };
}
