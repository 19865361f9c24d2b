// Parses Mermaid diagrams with Mermaid itself (under jsdom): reads a JSON list of diagram texts on stdin,
// writes for each {tasks: [{section, task, start, end, milestone}]} (times in seconds of the day) or
// {error}. Used by tests/test_plan_playbook.py; installed with `npm ci` from package-lock.json.
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
mermaid.initialize({ startOnLoad: false });

const seconds = (date) => date.getHours() * 3600 + date.getMinutes() * 60 + date.getSeconds();
let input = '';
for await (const chunk of process.stdin) input += chunk;
const results = [];
for (const text of JSON.parse(input)) {
  try {
    await mermaid.parse(text);
    const diagram = await mermaid.mermaidAPI.getDiagramFromText(text);
    results.push({
      type: diagram.type,
      tasks: diagram.db.getTasks().map((task) => ({
        section: task.section, task: task.task.trim(), start: seconds(task.startTime),
        end: seconds(task.endTime), milestone: Boolean(task.milestone),
      })),
    });
  } catch (error) {
    results.push({ error: String(error.message || error) });
  }
}
process.stdout.write(JSON.stringify(results));
