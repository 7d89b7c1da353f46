using MoeNotebooks.Calibration;
using MoeNotebooks.Costs;

namespace MoeNotebooks.Cli;

/// <summary>
/// <c>moe validate [--format table|json] [--data DIR]</c>: predictions against the shared measurements
/// (<c>../shared/calibration</c> next to the repository, <c>$MOE_CALIBRATION_DIR</c>, or <c>--data</c>).
/// </summary>
public static class ValidateVerb
{
    public static int Run(Options options, TextWriter stdout, TextWriter stderr)
    {
        var format = options.Option("--format", "table");
        var dir = options.Option("--data", "");
        options.Finish();
        if (format is not ("json" or "table")) throw new UsageException($"--format = {format}: must be table or json");
        var data = PublicData.Locate(dir.Length == 0 ? null : dir);
        if (data is null)
        {
            stderr.WriteLine(dir.Length == 0 ? $"error: {CalibrationData.WhyMissing()}" : $"error: --data = {dir}: not a folder");
            return 2;
        }
        var report = Validation.Run(data);
        if (format == "json")
        {
            stdout.Write(report.ToJson());
            stdout.WriteLine();
        }
        else report.WriteSummary(stdout);
        return 0;
    }
}
