using MoeNotebooks.Calibration;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;

namespace MoeNotebooks.Cli;

/// <summary>
/// <c>moe validate [--format table|json] [--data DIR] [--ablation sc21|modern]</c>: predictions against the shared
/// measurements (<c>../shared/calibration</c> next to the repository, <c>$MOE_CALIBRATION_DIR</c>, or <c>--data</c>);
/// <c>--ablation sc21</c> reports the SC21 suite under each rung of <see cref="Sc21Ablation"/> instead; <c>--ablation modern</c>
/// the training-modern suite under each rung of <see cref="ModernSuite.Ablation"/>; <c>--write-fits FILE</c> writes the
/// suite's per-generation fits (<see cref="TrainingFits"/>, data/calibration/training-fits.json) instead of the report.
/// </summary>
public static class ValidateVerb
{
    public static int Run(Options options, TextWriter stdout, TextWriter stderr)
    {
        var format = options.Option("--format", "table");
        var dir = options.Option("--data", "");
        var ablation = options.Option("--ablation", "");
        var writeFits = options.Option("--write-fits", "");
        options.Finish();
        if (format is not ("json" or "table")) throw new UsageException($"--format = {Cli.Shown(format)}: must be table or json");
        if (ablation is not ("" or "sc21" or "modern")) throw new UsageException($"--ablation = {Cli.Shown(ablation)}: must be sc21 or modern");
        var data = PublicData.Locate(dir.Length == 0 ? null : dir);
        if (data is null)
        {
            stderr.WriteLine(dir.Length == 0 ? $"error: {CalibrationData.WhyMissing()}" : $"error: --data = {Cli.Shown(dir)}: not a folder");
            return 2;
        }
        if (writeFits.Length > 0)
        {
            // The per-generation fits as data (TrainingFits): what moe predict reads; the calibration tests compare it to the live fit.
            if (ablation.Length > 0) throw new UsageException("--write-fits and --ablation: give one");
            var fits = TrainingFits.Of(ModernSuite.Run(data), data.PathOf(ModernSuite.File));
            try { File.WriteAllText(writeFits, fits.ToJson()); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
            {
                throw new OutputException($"--write-fits = {Cli.Shown(writeFits)}: cannot write ({ConfigException.Visible(e.Message, 200)})");
            }
            foreach (var (name, g) in fits.Generations) stdout.WriteLine($"fit: {g.Fit} [{g.RowIds.Count} rows: {string.Join(", ", g.Frameworks)}]");
            stdout.WriteLine($"wrote {Cli.Shown(writeFits)} (rebuild to embed it: moe predict reads the embedded copy)");
            return 0;
        }
        var report = ablation switch { "sc21" => Sc21Ablation.Report(data), "modern" => ModernSuite.AblationReport(data), _ => Validation.Run(data) };
        if (format == "json")
        {
            stdout.Write(report.ToJson());
            stdout.WriteLine();
        }
        else report.WriteSummary(stdout);
        return 0;
    }
}
