/**
 * The extension's settings and how they become the bridge's command line.
 *
 * `tierhost.pythonPath` empty means "the workspace's .venv, else python3 on PATH": the
 * common setup is a checkout with `make venv` done, and it should work untouched.
 */
import * as path from "node:path";

export interface Settings {
  hostUrl: string;
  token: string;
  pythonPath: string;
}

export const DEFAULTS: Settings = {
  hostUrl: "http://127.0.0.1:8788",
  token: "",
  pythonPath: "",
};

/** Reads each setting through `get` (VS Code's `WorkspaceConfiguration.get`), trimmed. */
export function readSettings(get: (key: keyof Settings) => unknown): Settings {
  const text = (key: keyof Settings): string => {
    const value = get(key);
    return typeof value === "string" && value.trim() !== "" ? value.trim() : DEFAULTS[key];
  };
  return { hostUrl: text("hostUrl").replace(/\/+$/, ""), token: text("token"), pythonPath: text("pythonPath") };
}

export interface Launch {
  command: string;
  args: string[];
  env: Record<string, string>;
}

/** The venv interpreter inside a workspace folder, for this platform. */
export function venvPython(folder: string, platform: NodeJS.Platform): string {
  return platform === "win32"
    ? path.win32.join(folder, ".venv", "Scripts", "python.exe")
    : path.posix.join(folder, ".venv", "bin", "python");
}

/** Which Python runs the bridge, and with what: `python -m lsp --url URL`. */
export function serverLaunch(
  settings: Settings,
  workspaceFolder: string | undefined,
  exists: (file: string) => boolean,
  platform: NodeJS.Platform,
  baseEnv: Record<string, string | undefined> = {},
): Launch {
  let command = settings.pythonPath;
  if (command === "") {
    const candidate = workspaceFolder ? venvPython(workspaceFolder, platform) : undefined;
    command = candidate && exists(candidate) ? candidate : platform === "win32" ? "python" : "python3";
  }
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(baseEnv)) {
    if (value !== undefined) {
      env[key] = value;
    }
  }
  env.TIERHOST_URL = settings.hostUrl;
  if (settings.token !== "") {
    env.TIERHOST_TOKEN = settings.token;
  }
  return { command, args: ["-m", "lsp", "--url", settings.hostUrl], env };
}
