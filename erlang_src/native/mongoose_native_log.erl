%% @doc Rate-limited logging for failures that can repeat at any rate (an
%% aborted transaction per request, say): at most one line per kind per
%% second. The kind is the report's `what'; the next line logged for a kind
%% carries `suppressed', how many of its lines were dropped since the last.
-module(mongoose_native_log).
-export([create_table/0, log/2]).

-define(WINDOW_MS, 1000).

%% @private Called by mongoose_native_sup, which owns the table.
-spec create_table() -> ok.
create_table() ->
    ?MODULE = ets:new(?MODULE, [named_table, public, {write_concurrency, true}]),
    ok.

-spec log(logger:level(), #{what := atom(), atom() => term()}) -> ok.
log(Level, Report = #{what := Kind}) ->
    case claim(Kind, erlang:monotonic_time(millisecond)) of
        suppressed -> ok;
        0 -> logger:log(Level, Report);
        Suppressed -> logger:log(Level, Report#{suppressed => Suppressed})
    end.

%% `suppressed', or how many lines were suppressed before this one. Two
%% processes logging the same kind at the same moment may both log.
-spec claim(atom(), integer()) -> suppressed | non_neg_integer().
claim(Kind, Now) ->
    try
        case ets:lookup(?MODULE, Kind) of
            [{_, Since, _}] when Now - Since < ?WINDOW_MS ->
                _ = ets:update_counter(?MODULE, Kind, {3, 1}),
                suppressed;
            Last ->
                true = ets:insert(?MODULE, {Kind, Now, 0}),
                lists:sum([Suppressed || {_, _, Suppressed} <- Last])
        end
    catch error:badarg ->
            0 % no table: the application is not running, log everything
    end.
