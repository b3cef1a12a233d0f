/**
 * Tierhost for VS Code: starts the LSP bridge (`python -m lsp`) with the configured
 * Python, lets the language client register the bridge's commands (palette, context
 * menu, code actions), fills in the editor's document and selection when a command is
 * run from the UI, and shows the GPU mode in the status bar.
 *
 * `activate` only wires things together; the decisions live in args.ts, settings.ts
 * and status.ts, which are unit-tested.
 */
import * as fs from "node:fs";
import * as vscode from "vscode";
import {
  LanguageClient,
  type LanguageClientOptions,
  type ServerOptions,
} from "vscode-languageclient/node";

import { NoEditor, commandArguments, editorState } from "./args";
import { readSettings, serverLaunch } from "./settings";
import { STATUS_NOTIFICATION, type StatusSummary, applyStatus, modeChoices } from "./status";

let client: LanguageClient | undefined;
let lastStatus: StatusSummary | undefined;

function launch(): ServerOptions {
  const config = vscode.workspace.getConfiguration("tierhost");
  const settings = readSettings((key) => config.get(key));
  const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  const run = serverLaunch(settings, folder, fs.existsSync, process.platform, process.env);
  return { command: run.command, args: run.args, options: { env: run.env, cwd: folder } };
}

async function pickMode(): Promise<string | undefined> {
  const choice = await vscode.window.showQuickPick(modeChoices(lastStatus), {
    title: "Tierhost: GPU mode",
    placeHolder: lastStatus?.mode ? `now: ${lastStatus.mode}` : "choose a mode",
  });
  return choice?.label;
}

function clientOptions(output: vscode.LogOutputChannel): LanguageClientOptions {
  return {
    documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
    outputChannel: output,
    middleware: {
      executeCommand: async (command, args, next) => {
        if (command === "tierhost.setMode" && args.length === 0) {
          const mode = await pickMode();
          return mode === undefined ? undefined : next(command, [mode]);
        }
        try {
          return await next(command, commandArguments(command, args, editorState(vscode.window.activeTextEditor)));
        } catch (error) {
          if (error instanceof NoEditor) {
            void vscode.window.showWarningMessage(error.message);
            return undefined;
          }
          throw error;
        }
      },
    },
  };
}

async function start(context: vscode.ExtensionContext, item: vscode.StatusBarItem, output: vscode.LogOutputChannel) {
  client = new LanguageClient("tierhost", "Tierhost", launch(), clientOptions(output));
  context.subscriptions.push(
    client.onNotification(STATUS_NOTIFICATION, (summary: StatusSummary) => {
      lastStatus = summary;
      applyStatus(item, summary);
    }),
  );
  await client.start();
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel("Tierhost", { log: true });
  const item = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Left, 50);
  item.name = "Tierhost GPU mode";
  item.command = "tierhost.setMode";
  applyStatus(item, undefined);
  item.show();
  context.subscriptions.push(output, item);
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (event.affectsConfiguration("tierhost") && client !== undefined) {
        await client.stop();
        await start(context, item, output);
      }
    }),
  );
  await start(context, item, output);
}

export async function deactivate(): Promise<void> {
  await client?.stop();
  client = undefined;
}
