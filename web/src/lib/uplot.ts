// uPlot with its stylesheet: imported only by components/Chart.tsx, dynamically, so both land in
// a chunk of their own that is loaded when the first chart is shown.
import "uplot/dist/uPlot.min.css";
export { default } from "uplot";
