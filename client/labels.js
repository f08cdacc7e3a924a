// The seven labels of the interface, in vector order, and one colour per label.

export const LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"];

export const COLORS = {
  angry: "#ef5350",
  disgust: "#66bb6a",
  fear: "#ab47bc",
  happy: "#ffd54f",
  sad: "#42a5f5",
  surprise: "#ffa726",
  neutral: "#b0bec5",
};

export function colorFor(label) {
  return COLORS[label] || "#ffffff";
}
