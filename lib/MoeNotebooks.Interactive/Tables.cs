using System.Globalization;
using System.Reflection;
using Microsoft.Data.Analysis;

namespace MoeNotebooks.Interactive;

/// <summary>
/// Builds Microsoft.Data.Analysis <see cref="DataFrame"/>s from records or rows; a notebook shows them with
/// <see cref="TableDisplay"/> (no index column, rounded numbers, no mid-token breaks, horizontal scroll).
/// </summary>
public static class Tables
{
    /// <summary>
    /// One row per item, one column per public instance property (then public field, for tuples), in declaration order.
    /// double/float/decimal become double columns, long/int/short/byte long or int columns, bool bool columns,
    /// string and enums string columns; nullable versions keep nulls; anything else becomes its invariant string.
    /// </summary>
    public static DataFrame From<T>(IEnumerable<T> items)
    {
        ChartDisplay.Install();
        ArgumentNullException.ThrowIfNull(items);
        var rows = items.ToList();
        var members = typeof(T).GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.CanRead && p.GetIndexParameters().Length == 0)
            .Select(p => (p.Name, Type: p.PropertyType, Get: (Func<object?, object?>)p.GetValue))
            .Concat(typeof(T).GetFields(BindingFlags.Public | BindingFlags.Instance)
                .Select(f => (f.Name, Type: f.FieldType, Get: (Func<object?, object?>)f.GetValue)))
            .ToList();
        if (members.Count == 0)
        {
            throw new ArgumentException($"{typeof(T).Name} has no public properties or fields to turn into columns.", nameof(items));
        }

        return new DataFrame(members.Select(m => Column(m.Name, m.Type, rows.Select(r => m.Get(r)).ToList())));
    }

    /// <summary>
    /// A table from column names and rows of values. Each column's type is inferred from its non-null values
    /// (all integral → long, all numeric → double, all bool → bool, otherwise string).
    /// </summary>
    public static DataFrame FromRows(IReadOnlyList<string> columnNames, IEnumerable<IReadOnlyList<object?>> rows)
    {
        ChartDisplay.Install();
        ArgumentNullException.ThrowIfNull(columnNames);
        ArgumentNullException.ThrowIfNull(rows);
        var data = rows.ToList();
        for (var r = 0; r < data.Count; r++)
        {
            if (data[r].Count != columnNames.Count)
            {
                throw new ArgumentException($"Row {r} has {data[r].Count} values but there are {columnNames.Count} columns.", nameof(rows));
            }
        }

        return new DataFrame(columnNames.Select((name, c) =>
        {
            var values = data.Select(row => row[c]).ToList();
            return Column(name, InferType(values), values);
        }));
    }

    private static Type InferType(IReadOnlyList<object?> values)
    {
        var present = values.Where(v => v is not null).ToList();
        if (present.Count == 0)
        {
            return typeof(string);
        }

        if (present.All(v => v is long or int or short or byte or sbyte or ushort or uint))
        {
            return typeof(long?);
        }

        if (present.All(v => v is double or float or decimal or long or int or short or byte or sbyte or ushort or uint))
        {
            return typeof(double?);
        }

        return present.All(v => v is bool) ? typeof(bool?) : typeof(string);
    }

    private static DataFrameColumn Column(string name, Type type, IReadOnlyList<object?> values)
    {
        var core = Nullable.GetUnderlyingType(type) ?? type;
        if (core == typeof(double) || core == typeof(float) || core == typeof(decimal))
        {
            return new DoubleDataFrameColumn(name, values.Select(v => v is null ? (double?)null : Convert.ToDouble(v, CultureInfo.InvariantCulture)));
        }

        if (core == typeof(int) || core == typeof(short) || core == typeof(byte) || core == typeof(sbyte) || core == typeof(ushort))
        {
            return new Int32DataFrameColumn(name, values.Select(v => v is null ? (int?)null : Convert.ToInt32(v, CultureInfo.InvariantCulture)));
        }

        if (core == typeof(long) || core == typeof(uint))
        {
            return new Int64DataFrameColumn(name, values.Select(v => v is null ? (long?)null : Convert.ToInt64(v, CultureInfo.InvariantCulture)));
        }

        if (core == typeof(bool))
        {
            return new BooleanDataFrameColumn(name, values.Select(v => (bool?)v));
        }

        return new StringDataFrameColumn(name, values.Select(v => v switch
        {
            null => null,
            IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
            _ => v.ToString(),
        }));
    }
}
