/** The few `vscode` API pieces the pure modules touch, for unit tests outside the editor. */
export class ThemeColor {
  constructor(public readonly id: string) {}
}

export enum StatusBarAlignment {
  Left = 1,
  Right = 2,
}

export interface StatusBarItem {
  text: string;
  tooltip: string | undefined;
  backgroundColor: ThemeColor | undefined;
}
