namespace MoeNotebooks.Costs;

/// <summary>
/// Derivative-free minimisation (Nelder and Mead's simplex, standard coefficients 1, 2, 0.5, 0.5), deterministic:
/// the same start gives the same answer. Used to fit a handful of cost-model parameters.
/// </summary>
public static class NelderMead
{
    /// <summary>Minimises <paramref name="f"/> from <paramref name="start"/>; <paramref name="steps"/> sizes the first simplex.</summary>
    public static (double[] X, double Value, int Evaluations) Minimize(Func<double[], double> f, double[] start, double[] steps, int maxIterations = 4000, double tolerance = 1e-12)
    {
        var n = start.Length;
        if (steps.Length != n) throw new ArgumentException("steps must match start in length", nameof(steps));
        var points = new double[n + 1][];
        var values = new double[n + 1];
        var evaluations = 0;
        double F(double[] x) { evaluations++; var v = f(x); return double.IsFinite(v) ? v : double.MaxValue; }
        for (var i = 0; i <= n; i++)
        {
            points[i] = (double[])start.Clone();
            if (i > 0) points[i][i - 1] += steps[i - 1];
            values[i] = F(points[i]);
        }
        var order = new int[n + 1];
        for (var iteration = 0; iteration < maxIterations; iteration++)
        {
            for (var i = 0; i <= n; i++) order[i] = i;
            Array.Sort(order, (a, b) => values[a].CompareTo(values[b]));
            points = order.Select(i => points[i]).ToArray();
            values = order.Select(i => values[i]).ToArray();
            if (Math.Abs(values[n] - values[0]) <= tolerance * (Math.Abs(values[0]) + tolerance)) break;
            var centroid = new double[n];
            for (var i = 0; i < n; i++)
                for (var j = 0; j < n; j++) centroid[j] += points[i][j] / n;
            double[] Along(double t) { var x = new double[n]; for (var j = 0; j < n; j++) x[j] = centroid[j] + t * (points[n][j] - centroid[j]); return x; }
            var reflected = Along(-1);
            var fr = F(reflected);
            if (fr < values[0])
            {
                var expanded = Along(-2);
                var fe = F(expanded);
                (points[n], values[n]) = fe < fr ? (expanded, fe) : (reflected, fr);
            }
            else if (fr < values[n - 1]) (points[n], values[n]) = (reflected, fr);
            else
            {
                var contracted = fr < values[n] ? Along(-0.5) : Along(0.5);
                var fc = F(contracted);
                if (fc < Math.Min(fr, values[n])) (points[n], values[n]) = (contracted, fc);
                else
                {
                    for (var i = 1; i <= n; i++)
                    {
                        for (var j = 0; j < n; j++) points[i][j] = points[0][j] + 0.5 * (points[i][j] - points[0][j]);
                        values[i] = F(points[i]);
                    }
                }
            }
        }
        var best = 0;
        for (var i = 1; i <= n; i++) if (values[i] < values[best]) best = i;
        return (points[best], values[best], evaluations);
    }
}
