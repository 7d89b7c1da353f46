using System.Globalization;

namespace MoeNotebooks.Config;

/// <summary>Small guards shared by the description records. Each throws <see cref="ConfigException"/>.</summary>
internal static class Validate
{
    public static string Show(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    public static void Positive(string field, long value)
    {
        if (value <= 0) throw new ConfigException(field, value.ToString(CultureInfo.InvariantCulture), "must be a positive integer (>= 1)");
    }

    public static void Positive(string field, double value)
    {
        if (!double.IsFinite(value) || value <= 0)
            throw new ConfigException(field, Show(value), "must be a finite number > 0");
    }

    public static void NonNegative(string field, double value)
    {
        if (!double.IsFinite(value) || value < 0)
            throw new ConfigException(field, Show(value), "must be a finite number >= 0");
    }

    public static void InRange(string field, double value, double min, double max)
    {
        if (!double.IsFinite(value) || value < min || value > max)
            throw new ConfigException(field, Show(value), $"must lie in [{Show(min)}, {Show(max)}]");
    }

    public static void Divides(string field, long value, string byField, long by)
    {
        if (by <= 0 || value % by != 0)
            throw new ConfigException(field, value.ToString(CultureInfo.InvariantCulture),
                $"must be divisible by {byField} = {by} (valid: a multiple of {by})");
    }

    public static void NotEmpty(string field, string? value)
    {
        if (string.IsNullOrWhiteSpace(value)) throw new ConfigException(field, value is null ? null : $"\"{value}\"", "must be a non-empty string");
    }

    /// <summary>Multiplies sizes, failing with a clear message instead of wrapping around.</summary>
    public static long Product(string what, params long[] factors)
    {
        long p = 1;
        foreach (var f in factors)
        {
            try { p = checked(p * f); }
            catch (OverflowException)
            {
                throw new ConfigException(what, string.Join(" x ", factors.Select(x => x.ToString(CultureInfo.InvariantCulture))),
                    "overflows a 64-bit integer; use smaller sizes");
            }
        }
        return p;
    }
}
